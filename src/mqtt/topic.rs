//! Topic templates and MQTT filter matching.
//!
//! A template is a topic with named segments: `plant/{site}/{line}/{asset}/{signal}`.
//! `{name}` captures exactly one level; `{name+}`, allowed only as the last
//! segment, captures one or more levels joined by `/` (so `plant/{tag+}` maps
//! `plant/site1/line1/comp01/power_kw` to the tag `site1/line1/comp01/power_kw`).
//! A tag template such as `{site}.{asset}.{signal}` then builds the tag from
//! the captures.

use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Lit(String),
    One(String),
    Rest(String),
}

/// A parsed topic template.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicTemplate {
    segs: Vec<Seg>,
}

fn placeholder(seg: &str) -> Option<&str> {
    seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl TopicTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(t: &str) -> Result<TopicTemplate, String> {
        if t.is_empty() {
            return Err("an empty topic template".into());
        }
        let parts: Vec<&str> = t.split('/').collect();
        let mut segs = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            if p.contains('+') && placeholder(p).is_none() || p.contains('#') {
                return Err(format!(
                    "`{p}`: templates name their segments (`{{name}}`, `{{name+}}`) instead of MQTT wildcards"
                ));
            }
            match placeholder(p) {
                Some(inner) => {
                    if let Some(name) = inner.strip_suffix('+') {
                        if i + 1 != parts.len() {
                            return Err(format!(
                                "`{p}`: a multi-level segment must be the last one"
                            ));
                        }
                        if !valid_name(name) {
                            return Err(format!(
                                "`{p}`: segment names are letters, digits and `_`"
                            ));
                        }
                        segs.push(Seg::Rest(name.to_string()));
                    } else {
                        if !valid_name(inner) {
                            return Err(format!(
                                "`{p}`: segment names are letters, digits and `_`"
                            ));
                        }
                        segs.push(Seg::One(inner.to_string()));
                    }
                }
                None if p.contains('{') || p.contains('}') => {
                    return Err(format!("`{p}`: a placeholder must be a whole segment"))
                }
                None => segs.push(Seg::Lit(p.to_string())),
            }
        }
        Ok(TopicTemplate { segs })
    }

    /// Names the template captures, in order.
    pub fn names(&self) -> Vec<&str> {
        self.segs
            .iter()
            .filter_map(|s| match s {
                Seg::One(n) | Seg::Rest(n) => Some(n.as_str()),
                Seg::Lit(_) => None,
            })
            .collect()
    }

    /// The MQTT filter that subscribes to every topic this template matches.
    pub fn filter(&self) -> String {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.as_str(),
                Seg::One(_) => "+",
                Seg::Rest(_) => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Captures of `topic`, or `None` when it does not match.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut out = Vec::with_capacity(self.segs.len());
        let mut rest = topic;
        for (i, s) in self.segs.iter().enumerate() {
            let last = i + 1 == self.segs.len();
            if let Seg::Rest(n) = s {
                if rest.is_empty() {
                    return None;
                }
                out.push((n.as_str(), rest));
                return Some(out);
            }
            let (level, tail) = match rest.find('/') {
                Some(k) => (&rest[..k], Some(&rest[k + 1..])),
                None => (rest, None),
            };
            match s {
                Seg::Lit(l) if l != level => return None,
                Seg::One(n) => {
                    if level.is_empty() {
                        return None;
                    }
                    out.push((n.as_str(), level));
                }
                _ => {}
            }
            match (tail, last) {
                (None, true) => return Some(out),
                (Some(t), false) => rest = t,
                _ => return None,
            }
        }
        None
    }
}

/// A tag template: text with `{name}` references to captures.
#[derive(Clone, Debug, PartialEq)]
pub struct TagTemplate {
    parts: Vec<(bool, String)>,
}

impl TagTemplate {
    /// Parses `text`; every name must be one of `known`.
    pub fn parse(text: &str, known: &[&str]) -> Result<TagTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push((false, rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}`: unclosed `{{`"));
            };
            let name = &rest[open + 1..open + close];
            if !known.contains(&name) {
                return Err(format!(
                    "`{text}`: `{{{name}}}` is not captured (available: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            parts.push((true, name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push((false, rest.to_string()));
        }
        if parts.is_empty() {
            return Err("an empty tag template".into());
        }
        Ok(TagTemplate { parts })
    }

    /// Renders the tag from captures (missing ones render empty).
    pub fn render(&self, caps: &[(&str, &str)]) -> String {
        let mut s = String::new();
        for (is_ref, p) in &self.parts {
            if *is_ref {
                if let Some((_, v)) = caps.iter().find(|(n, _)| n == p) {
                    s.push_str(v);
                }
            } else {
                s.push_str(p);
            }
        }
        s
    }

    /// Renders from a map (for sinks rendering publish topics from row fields).
    pub fn render_map(&self, vals: &HashMap<&str, String>) -> String {
        let mut s = String::new();
        for (is_ref, p) in &self.parts {
            if *is_ref {
                if let Some(v) = vals.get(p.as_str()) {
                    s.push_str(v);
                }
            } else {
                s.push_str(p);
            }
        }
        s
    }
}

/// The topic filter without a `$share/{group}/` prefix.
pub fn unshared(filter: &str) -> &str {
    if let Some(rest) = filter.strip_prefix("$share/") {
        if let Some(k) = rest.find('/') {
            return &rest[k + 1..];
        }
    }
    filter
}

/// MQTT filter matching (`+` one level, `#` the rest, including none).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let filter = unshared(filter);
    // Topics starting with `$` are not matched by leading wildcards (MQTT 4.7.2).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_capture_levels() {
        let t = TopicTemplate::parse("plant/{site}/{line}/{asset}/{signal}").unwrap();
        assert_eq!(t.filter(), "plant/+/+/+/+");
        let c = t.captures("plant/s1/l2/comp01/power_kw").unwrap();
        assert_eq!(
            c,
            vec![
                ("site", "s1"),
                ("line", "l2"),
                ("asset", "comp01"),
                ("signal", "power_kw")
            ]
        );
        assert!(t.captures("plant/s1/l2/comp01").is_none());
        assert!(t.captures("plant/s1/l2/comp01/power_kw/x").is_none());
        assert!(t.captures("other/s1/l2/comp01/power_kw").is_none());
        assert!(t.captures("plant/s1//comp01/power_kw").is_none());
        let tag = TagTemplate::parse("{site}.{asset}.{signal}", &t.names()).unwrap();
        assert_eq!(tag.render(&c), "s1.comp01.power_kw");
        assert!(TagTemplate::parse("{nope}", &t.names()).is_err());
    }

    #[test]
    fn multi_level_tail() {
        let t = TopicTemplate::parse("plant/{tag+}").unwrap();
        assert_eq!(t.filter(), "plant/#");
        assert_eq!(
            t.captures("plant/site1/line1/comp01/power_kw").unwrap(),
            vec![("tag", "site1/line1/comp01/power_kw")]
        );
        assert!(t.captures("plant").is_none());
        assert!(TopicTemplate::parse("plant/{tag+}/x").is_err());
        assert!(TopicTemplate::parse("plant/#").is_err());
        assert!(TopicTemplate::parse("plant/a{b}").is_err());
    }

    #[test]
    fn filters() {
        assert!(filter_matches("plant/#", "plant/a/b"));
        assert!(filter_matches("plant/#", "plant"));
        assert!(filter_matches("plant/+/x", "plant/a/x"));
        assert!(!filter_matches("plant/+/x", "plant/a/y"));
        assert!(filter_matches("$share/g1/plant/+", "plant/a"));
        assert!(!filter_matches("#", "$SYS/broker"));
        assert_eq!(unshared("$share/g/a/b"), "a/b");
    }
}
