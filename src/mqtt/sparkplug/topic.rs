//! Sparkplug topics: `spBv1.0/{group}/{type}/{node}[/{device}]`.

/// The message kinds of the `spBv1.0` namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    NCmd,
    DCmd,
    State,
}

/// A parsed Sparkplug topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpTopic<'a> {
    pub group: &'a str,
    pub kind: Kind,
    pub node: &'a str,
    pub device: Option<&'a str>,
}

/// Parses `spBv1.0/{group}/{type}/{node}[/{device}]`.
pub fn parse_topic(topic: &str) -> Result<SpTopic<'_>, String> {
    let p: Vec<&str> = topic.split('/').collect();
    if p.first() != Some(&"spBv1.0") {
        return Err("not a Sparkplug B topic (`spBv1.0/...`)".into());
    }
    if p.get(1) == Some(&"STATE") {
        return Ok(SpTopic {
            group: "",
            kind: Kind::State,
            node: p.get(2).copied().unwrap_or(""),
            device: None,
        });
    }
    let kind = match p.get(2).copied() {
        Some("NBIRTH") => Kind::NBirth,
        Some("NDEATH") => Kind::NDeath,
        Some("DBIRTH") => Kind::DBirth,
        Some("DDEATH") => Kind::DDeath,
        Some("NDATA") => Kind::NData,
        Some("DDATA") => Kind::DData,
        Some("NCMD") => Kind::NCmd,
        Some("DCMD") => Kind::DCmd,
        other => {
            return Err(format!(
                "unknown Sparkplug message type `{}`",
                other.unwrap_or("")
            ))
        }
    };
    let device_kind = matches!(kind, Kind::DBirth | Kind::DDeath | Kind::DData | Kind::DCmd);
    let ok_len = if device_kind {
        p.len() == 5
    } else {
        p.len() == 4
    };
    if !ok_len || p.iter().any(|s| s.is_empty()) {
        return Err("malformed Sparkplug topic".into());
    }
    Ok(SpTopic {
        group: p[1],
        kind,
        node: p[3],
        device: if device_kind { Some(p[4]) } else { None },
    })
}
