//! The `webhook` sink's table (issue 32): a wrong address, a secret whose
//! variable is not set, a template that does not compile, a table it cannot
//! send are config errors at their line (exit 78). Delivery itself is tested
//! against Python's http.server in `tests/interop/webhook.rs`.

use crate::common::*;

#[test]
fn a_wrong_webhook_table_is_a_config_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_template = dir.path().join("bad.json");
    std::fs::write(&bad_template, "{\n  \"asset\": {{ asset \n}").unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "our CA is on the intranet\n").unwrap();
    let text = std::fs::read_to_string(dataflow("workload_v1.toml")).unwrap();
    let cases = [
        ("url = \"ftp://cmms.example.com/x\"", "url", "is not an http:// or https:// address"),
        (
            "url = \"https://cmms.example.com/x\"\nheaders_env = { Authorization = \"PLANTFLOW_TEST_UNSET_7\" }",
            "headers_env",
            "the environment variable `PLANTFLOW_TEST_UNSET_7` is not set",
        ),
        (
            &format!("url = \"https://cmms.example.com/x\"\ntemplate = \"{}\"", bad_template.display()),
            "template",
            "the template does not compile",
        ),
        (
            "url = \"https://cmms.example.com/x\"\ntables = [\"aggregates\"]",
            "tables",
            "unknown table `aggregates`",
        ),
        (
            &format!("url = \"http://cmms.example.com/x\"\nca_file = \"{}\"", not_pem.display()),
            "ca_file",
            "a CA file is for an https:// url",
        ),
        (
            &format!("url = \"https://cmms.example.com/x\"\nca_file = \"{}\"", not_pem.display()),
            "ca_file",
            "holds no PEM certificate",
        ),
    ];
    for (table, key, message) in cases {
        let df = dir.path().join("webhook.toml");
        let whole = format!("{text}\n[[sinks]]\ntype = \"webhook\"\nid = \"cmms\"\n{table}\n");
        std::fs::write(&df, &whole).unwrap();
        assert_config_error(&df, &fixture_dir(), key, message);
    }
}
