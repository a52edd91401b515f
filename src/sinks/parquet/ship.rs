//! The lake on object storage (`path = "s3://…"`, `az://…`, `gs://…`): the
//! node writes its lake to a local copy (`local`, the same commit protocol
//! and Delta logs as a local lake) and ships each commit to the bucket right
//! after it, through the `object_store` crate:
//!
//! 1. every data file a new Delta version adds (a single PUT, or a multipart
//!    upload above 10 MiB),
//! 2. then the version's JSON, created with `If-None-Match: *` (S3's
//!    conditional put; Azure and GCS natively), so two writers never share
//!    a version,
//! 3. then the log's checkpoint and `_last_checkpoint`, and the lake's
//!    commit record (`_plantflow/commit.json`, for `state inspect`).
//!
//! Readers of the bucket see a table's files only once its version names
//! them: a kill anywhere in between leaves every table readable at its
//! previous version, and the next start ships what the bucket lacks (the
//! local copy is the truth; a version already in the bucket with the same
//! bytes is one this node shipped before it was killed). Credentials come
//! from the environment (`AWS_*`, `AZURE_*`, `GOOGLE_*`) or the instance's
//! identity, never from the dataflow file, and are never logged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::Value;

/// Files above this go up in parts (object_store's `BufWriter` default).
const PART: usize = 8 << 20;

/// A bucket the lake is shipped to, and how far each table got.
pub struct Shipper {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    local: PathBuf,
    rt: tokio::runtime::Runtime,
    /// Per table: the last version and checkpoint in the bucket.
    shipped: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

/// What a sync shipped.
#[derive(Debug, Default, PartialEq)]
pub struct Shipped {
    pub versions: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Whether `path` names an object store (`s3://`, `az://`, `abfss://`, `gs://`).
pub fn is_remote(path: &str) -> bool {
    [
        "s3://", "s3a://", "az://", "azure://", "abfs://", "abfss://", "gs://",
    ]
    .iter()
    .any(|s| path.starts_with(s))
}

/// The text between `a` and `b` in `s`.
fn between<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let rest = &s[s.find(a)? + a.len()..];
    Some(&rest[..rest.find(b)?])
}

/// An object_store error, said for an operator in one line: credentials
/// and missing buckets get what to check.
fn explain(url: &str, what: &str, e: object_store::Error) -> String {
    use object_store::Error as E;
    let text = e.to_string();
    // The store's answer: `403 Forbidden SignatureDoesNotMatch: …`.
    let said = match (
        between(&text, "status code: ", ":"),
        between(&text, "<Code>", "</Code>"),
    ) {
        (Some(status), Some(code)) => {
            let message = between(&text, "<Message>", "</Message>").unwrap_or_default();
            format!("{status} {code}: {message}")
        }
        _ => text.replace('\n', " "),
    };
    let denied = matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. })
        || ["401 ", "403 "].iter().any(|s| said.starts_with(s));
    let missing = matches!(e, E::NotFound { .. }) || said.contains("NoSuchBucket");
    if denied {
        format!(
            "{url}: the object store refused {what} ({said}); check the credentials in the \
             environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_*, \
             GOOGLE_SERVICE_ACCOUNT) or the instance's role, and its rights on the bucket"
        )
    } else if missing {
        format!("{url}: {what}: {said}; does the bucket exist? (plantflow does not create it)")
    } else {
        format!("{url}: {what}: {said}")
    }
}

impl Shipper {
    /// Builds the store for `url` from the environment and checks it
    /// answers (a listing of the lake's prefix).
    pub fn connect(url: &str, local: &Path) -> Result<Shipper, String> {
        Self::connect_with(url, local, &[])
    }

    /// [`Self::connect`] with S3 settings (`aws_endpoint`, `aws_region`, …,
    /// as object_store names them) over the environment's.
    pub fn connect_with(url: &str, local: &Path, s3: &[(&str, &str)]) -> Result<Shipper, String> {
        // reqwest builds its TLS client with the process's default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: not a URL: {e}"))?;
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match parsed.scheme() {
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                // No keys in the environment: a profile's, if there is one.
                let env = |k: &str| std::env::var_os(k).is_some();
                if !env("AWS_ACCESS_KEY_ID") {
                    if let Some(p) = aws_profile().map_err(|e| format!("{url}: {e}"))? {
                        b = b.with_access_key_id(p.key).with_secret_access_key(p.secret);
                        if let Some(t) = p.token {
                            b = b.with_token(t);
                        }
                        if let Some(r) = p
                            .region
                            .filter(|_| !env("AWS_REGION") && !env("AWS_DEFAULT_REGION"))
                        {
                            b = b.with_region(r);
                        }
                    }
                }
                for (k, v) in s3 {
                    let key = k.parse().map_err(|e| format!("{url}: {k}: {e}"))?;
                    b = b.with_config(key, *v);
                }
                b.build().map(|s| Arc::new(s) as _)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
            "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map(|s| Arc::new(s) as _),
            other => return Err(format!("{url}: no object store for `{other}://`")),
        };
        let store = built.map_err(|e| explain(url, "its configuration", e))?;
        let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the shipper's runtime: {e}"))?;
        let s = Shipper {
            url: url.trim_end_matches('/').to_string(),
            store,
            prefix,
            local: local.to_path_buf(),
            rt,
            shipped: BTreeMap::new(),
        };
        let probe = s.rt.block_on(s.store.list_with_delimiter(Some(&s.prefix)));
        probe.map_err(|e| explain(url, "a listing of the lake", e))?;
        Ok(s)
    }

    fn object(&self, rel: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// The highest version of `table`'s log in the bucket, and of its checkpoint.
    fn remote_state(&self, table: &str) -> Result<(Option<u64>, Option<u64>), String> {
        let log = self.object(&format!("{table}/_delta_log"));
        let listed = self
            .rt
            .block_on(self.store.list_with_delimiter(Some(&log)))
            .map_err(|e| explain(&self.url, &format!("a listing of {table}'s log"), e))?;
        let mut version = None;
        let mut checkpoint = None;
        for o in listed.objects {
            let name = o.location.filename().unwrap_or_default().to_string();
            if let Some(v) = name
                .strip_suffix(".json")
                .and_then(|v| v.parse::<u64>().ok())
            {
                version = version.max(Some(v));
            }
            let ck = name.strip_suffix(".checkpoint.parquet");
            if let Some(v) = ck.and_then(|v| v.parse::<u64>().ok()) {
                checkpoint = checkpoint.max(Some(v));
            }
        }
        Ok((version, checkpoint))
    }

    /// Uploads a local file of the lake to the same place in the bucket.
    fn upload(&self, rel: &str, mode: PutMode) -> Result<u64, String> {
        let path = self.local.join(rel);
        let mut f = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let to = self.object(rel);
        let what = format!("an upload of {rel}");
        if len as usize <= PART || !matches!(mode, PutMode::Overwrite) {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let opts = PutOptions {
                mode: mode.clone(),
                ..PutOptions::default()
            };
            let put = self.rt.block_on(self.store.put_opts(
                &to,
                PutPayload::from(bytes.clone()),
                opts,
            ));
            return match put {
                Ok(_) => Ok(len),
                // A version this node put before it was killed (or whose
                // answer was lost and retried): the same bytes are there.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let there = self
                        .rt
                        .block_on(async { self.store.get(&to).await?.bytes().await })
                        .map_err(|e| explain(&self.url, &format!("a read of {rel}"), e))?;
                    if there.as_ref() == bytes.as_slice() {
                        Ok(0)
                    } else {
                        Err(format!(
                            "{}/{rel} exists with other content: another writer committed this \
                             Delta version (two nodes on one lake?)",
                            self.url
                        ))
                    }
                }
                Err(e) => Err(explain(&self.url, &what, e)),
            };
        }
        // Large data files: a multipart upload, part by part.
        let store = self.store.clone();
        self.rt
            .block_on(async move {
                use tokio::io::AsyncWriteExt;
                let mut w = object_store::buffered::BufWriter::with_capacity(store, to, PART);
                let mut buf = vec![0u8; PART];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.put(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .map_err(std::io::Error::other)?;
                }
                w.shutdown().await
            })
            .map_err(|e| format!("{}: {what}: {e}", self.url))?;
        Ok(len)
    }

    /// Deletes files of the lake (paths relative to it) from the bucket.
    pub fn delete(&self, rels: &[String]) -> Result<(), String> {
        for rel in rels {
            let to = self.object(rel);
            match self.rt.block_on(self.store.delete(&to)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(explain(&self.url, &format!("a delete of {rel}"), e)),
            }
        }
        Ok(())
    }

    /// The bucket's latest version of `table` is the local copy's version
    /// `v`, byte for byte: else the prefix holds another lake.
    fn same_version(&self, table: &str, v: u64) -> Result<(), String> {
        let rel = format!("{table}/_delta_log/{v:020}.json");
        let mine = std::fs::read(self.local.join(&rel)).ok();
        let there = self
            .rt
            .block_on(async { self.store.get(&self.object(&rel)).await?.bytes().await })
            .map_err(|e| explain(&self.url, &format!("a read of {rel}"), e))?;
        if mine.as_deref() == Some(there.as_ref()) {
            return Ok(());
        }
        Err(format!(
            "{}/{table} holds a Delta version {v} that is not the local copy's ({}): another \
             lake at this prefix, or a local copy that was lost (a node does not start from \
             the bucket alone yet); give another prefix",
            self.url,
            self.local.display()
        ))
    }

    /// Ships every table's versions the bucket lacks (their files first),
    /// the newest checkpoint, and the lake's commit record.
    pub fn sync(&mut self) -> Result<Shipped, String> {
        let mut done = Shipped::default();
        let tables = super::delta::maintain::tables(&self.local).unwrap_or_default();
        for (table, dir) in tables {
            let (mut version, mut checkpoint) = match self.shipped.get(&table) {
                Some(s) => *s,
                None => {
                    let state = self.remote_state(&table)?;
                    if let Some(v) = state.0 {
                        self.same_version(&table, v)?;
                    }
                    state
                }
            };
            let log = dir.join("_delta_log");
            let next = |v: Option<u64>| v.map_or(0, |v| v + 1);
            while log.join(format!("{:020}.json", next(version))).exists() {
                let v = next(version);
                let rel = format!("{table}/_delta_log/{v:020}.json");
                let text = std::fs::read_to_string(self.local.join(&rel))
                    .map_err(|e| format!("cannot read {rel}: {e}"))?;
                for line in text.lines() {
                    let a: Value = serde_json::from_str(line).map_err(|e| format!("{rel}: {e}"))?;
                    let Some(path) = a.pointer("/add/path").and_then(Value::as_str) else {
                        continue;
                    };
                    // A file compacted away and vacuumed since is not needed.
                    if dir.join(path).exists() {
                        done.bytes +=
                            self.upload(&format!("{table}/{path}"), PutMode::Overwrite)?;
                        done.files += 1;
                    }
                }
                done.bytes += self.upload(&rel, PutMode::Create)?;
                done.versions += 1;
                version = Some(v);
            }
            let last = std::fs::read(log.join("_last_checkpoint"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v.get("version")?.as_u64());
            if let Some(c) =
                last.filter(|c| checkpoint.is_none_or(|s| *c > s) && version >= Some(*c))
            {
                self.upload(
                    &format!("{table}/_delta_log/{c:020}.checkpoint.parquet"),
                    PutMode::Overwrite,
                )?;
                self.upload(
                    &format!("{table}/_delta_log/_last_checkpoint"),
                    PutMode::Overwrite,
                )?;
                checkpoint = Some(c);
            }
            self.shipped.insert(table, (version, checkpoint));
        }
        if self.local.join("_plantflow/commit.json").exists() {
            self.upload("_plantflow/commit.json", PutMode::Overwrite)?;
        }
        Ok(done)
    }
}

/// Static keys of an AWS profile (`~/.aws/credentials`), with its region
/// (`~/.aws/config`), for a node whose environment has no keys.
struct Profile {
    key: String,
    secret: String,
    token: Option<String>,
    region: Option<String>,
}

/// `[section]` → key → value of an INI file (`~/.aws/credentials` style).
fn ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            let entry = out.entry(section.clone()).or_default();
            entry.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// The profile `AWS_PROFILE` names (else `default`) in the shared
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
/// `~/.aws/credentials`): none when there is no such file or section and
/// no profile was asked for; an error when the one asked for is missing.
fn aws_profile() -> Result<Option<Profile>, String> {
    let asked = std::env::var("AWS_PROFILE").ok();
    let name = asked.clone().unwrap_or_else(|| "default".into());
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| home.join(".aws").join(default), PathBuf::from)
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let sections = ini(&std::fs::read_to_string(&credentials).unwrap_or_default());
    let Some(s) = sections.get(&name) else {
        return match asked {
            Some(p) => Err(format!(
                "AWS_PROFILE={p}: no [{p}] with keys in {}",
                credentials.display()
            )),
            None => Ok(None),
        };
    };
    let (Some(key), Some(secret)) = (s.get("aws_access_key_id"), s.get("aws_secret_access_key"))
    else {
        return Err(format!(
            "profile [{name}] in {} has no aws_access_key_id and aws_secret_access_key \
             (only static keys are read from profiles)",
            credentials.display()
        ));
    };
    let config =
        ini(&std::fs::read_to_string(file("AWS_CONFIG_FILE", "config")).unwrap_or_default());
    let section = if name == "default" {
        name.clone()
    } else {
        format!("profile {name}")
    };
    Ok(Some(Profile {
        key: key.clone(),
        secret: secret.clone(),
        token: s.get("aws_session_token").cloned(),
        region: config.get(&section).and_then(|c| c.get("region")).cloned(),
    }))
}
