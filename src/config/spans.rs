//! Key path → source span, read once from the spanned TOML document, and the
//! conversion of that document into a plain `toml::Value` with `${VAR}`
//! interpolation applied to every string.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Spans of every key and value in a document, by dotted path.
#[derive(Default, Debug)]
pub struct SpanIndex {
    pub keys: HashMap<String, Range<usize>>,
    pub values: HashMap<String, Range<usize>>,
}

impl SpanIndex {
    /// The best span for a path: its key, else its value, else the nearest parent's.
    pub fn lookup(&self, path: &str) -> Range<usize> {
        let mut p = path.to_string();
        loop {
            if let Some(r) = self.keys.get(&p).or_else(|| self.values.get(&p)) {
                return r.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p.truncate(i),
                None => return 0..0,
            }
        }
    }

    /// The value's span for a path (falls back like [`lookup`](Self::lookup)).
    pub fn value(&self, path: &str) -> Range<usize> {
        self.values
            .get(path)
            .cloned()
            .unwrap_or_else(|| self.lookup(path))
    }
}

pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Converts the spanned document, indexing spans and interpolating strings.
/// Interpolation failures are returned as `(path, message)`.
pub fn convert(
    table: &Spanned<DeTable<'_>>,
    index: &mut SpanIndex,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) -> toml::Table {
    convert_table(table.get_ref(), "", index, lookup, errors)
}

fn convert_table(
    table: &DeTable<'_>,
    path: &str,
    index: &mut SpanIndex,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in table.iter() {
        let p = join(path, k.get_ref());
        index.keys.insert(p.clone(), k.span());
        let val = convert_value(v, &p, index, lookup, errors);
        out.insert(k.get_ref().to_string(), val);
    }
    out
}

fn convert_value(
    v: &Spanned<DeValue<'_>>,
    path: &str,
    index: &mut SpanIndex,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) -> toml::Value {
    index.values.insert(path.to_string(), v.span());
    match v.get_ref() {
        DeValue::String(s) => match super::interp::interpolate(s, lookup) {
            Ok(x) => toml::Value::String(x),
            Err(e) => {
                errors.push((path.to_string(), e));
                toml::Value::String(s.to_string())
            }
        },
        DeValue::Integer(i) => {
            let parsed = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).unwrap_or(0);
            toml::Value::Integer(parsed)
        }
        DeValue::Float(f) => {
            toml::Value::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN))
        }
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, item)| {
                    convert_value(item, &format!("{path}[{i}]"), index, lookup, errors)
                })
                .collect(),
        ),
        DeValue::Table(t) => toml::Value::Table(convert_table(t, path, index, lookup, errors)),
    }
}
