"""An S3-compatible server on loopback for the object-storage tests: moto's
server (nobody here wrote it) with request signing enforced (IAM), a user
whose key may do everything, and an empty bucket. One fix to moto's
signature check is below (its query-string encoding).

usage: s3_server.py BUCKET
Prints one JSON line {"endpoint", "key", "secret"} once it answers, then
serves until killed.
"""
import json
import os
import socket
import sys
import time

# The first three requests (the user, its key, its policy) go unsigned;
# every request after them must be signed by a key the server knows.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"

import boto3  # noqa: E402
from moto.iam import access_control  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from urllib.parse import quote, unquote  # noqa: E402

# moto 5.2 checks a signature against the request's path and query string
# as the web framework decoded them (`date=2026-01-05`, `prefix=plant/`),
# while SigV4 signs them encoded (`date%3D2026-01-05`, `prefix=plant%2F`, as
# AWS checks them): every Hive partition and every listing of a prefix
# would be refused. Re-encode them the way SigV4 specifies before moto does.
_create = access_control.IAMRequestBase._create_aws_request


def _create_encoded(self):
    path, _, query = self._path.partition("?")
    path = quote(unquote(path), safe="/~")
    self._path = path
    if query:
        pairs = (p.partition("=") for p in query.split("&"))
        query = "&".join(
            f"{quote(unquote(k), safe='-_.~')}={quote(unquote(v), safe='-_.~')}"
            for k, _, v in pairs
        )
        self._path = f"{path}?{query}"
    return _create(self)


access_control.IAMRequestBase._create_aws_request = _create_encoded


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


bucket = sys.argv[1]
port = free_port()
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = f"http://127.0.0.1:{port}"
kw = dict(endpoint_url=endpoint, region_name="us-east-1")
iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **kw)
iam.create_user(UserName="plantflow")
key = iam.create_access_key(UserName="plantflow")["AccessKey"]
iam.put_user_policy(
    UserName="plantflow",
    PolicyName="lake",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
)
s3 = boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                  aws_secret_access_key=key["SecretAccessKey"], **kw)
s3.create_bucket(Bucket=bucket)
print(json.dumps({"endpoint": endpoint, "key": key["AccessKeyId"],
                  "secret": key["SecretAccessKey"]}), flush=True)
while True:
    time.sleep(3600)
