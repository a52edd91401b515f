//! `${VAR}` and `${VAR:-default}` environment interpolation in string values.
//!
//! `$$` is a literal `$`. An unset variable without a default is an error
//! naming the variable, reported at the string's location.

/// Expands `${..}` references using `lookup`.
pub fn interpolate(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            let expr = &body[..end];
            let (name, default) = match expr.find(":-") {
                Some(j) => (&expr[..j], Some(&expr[j + 2..])),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (lookup(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "INPUT_DIR" => Some("/data/in".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_and_defaults() {
        assert_eq!(
            interpolate("${INPUT_DIR}/a.csv", &env).unwrap(),
            "/data/in/a.csv"
        );
        assert_eq!(interpolate("${OUT_DIR:-out}/x", &env).unwrap(), "out/x");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(
            interpolate("cost $$5 and $x", &env).unwrap(),
            "cost $5 and $x"
        );
        assert_eq!(
            interpolate("${NOPE}", &env).unwrap_err(),
            "environment variable `NOPE` is not set"
        );
        assert!(interpolate("${A", &env).is_err());
    }
}
