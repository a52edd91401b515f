//! What to read: explicit NodeIds, browse paths, and browse-based discovery
//! of a subtree with include/exclude patterns, resolved into items
//! `(tag, NodeId, group)`.
//!
//! Browse paths are `/`-separated BrowseNames below the Objects folder
//! (`Plant/site1/line1/comp01/power_kw`); a segment may pin its namespace
//! index (`2:Plant`). Discovery walks Objects (folders, devices) below the
//! root and keeps Variables; properties (EURange, EngineeringUnits, ...) are
//! not data and are skipped. Patterns are globs over the path relative to
//! the root (`*` stays within a segment, `**` crosses them). Browse calls are
//! batched to the server's MaxNodesPerBrowse.

use std::collections::HashMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use opcua::client::Session;
use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, NodeClass, NodeClassMask, NodeId,
    ReferenceDescription, ReferenceTypeId,
};

/// A node named in config.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeRef {
    Id(String),
    Path(String),
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Id(s) => write!(f, "node {s}"),
            NodeRef::Path(s) => write!(f, "browse path {s}"),
        }
    }
}

/// `[[sources.nodes]]`: one variable.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub node: NodeRef,
    /// Tag name; for browse paths defaults to the path.
    pub tag: Option<String>,
    pub group: usize,
}

/// `[[sources.browse]]`: every variable below a root that the patterns select.
#[derive(Clone, Debug)]
pub struct BrowseSpec {
    pub root: NodeRef,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Tag template over `{path}` (relative to the root) and `{name}`.
    pub tag: String,
    pub max_depth: usize,
    pub group: usize,
}

/// A resolved item.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub tag: String,
    pub node: NodeId,
    pub group: usize,
}

/// Keeps the items of process `share.0` of `share.1`: those whose node id's
/// text hashes (xxh3, the same on every process and every run) to it.
/// Returns whether any is left.
pub fn keep_share(items: &mut Vec<Item>, (me, of): (usize, usize)) -> bool {
    if of > 1 {
        items.retain(|i| {
            let h = xxhash_rust::xxh3::xxh3_64(i.node.to_string().as_bytes());
            h % of as u64 == me as u64
        });
    }
    !items.is_empty()
}

/// Compiles include/exclude globs (also used by config validation).
pub fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("pattern `{p}`: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| e.to_string())
}

/// Applies a tag template.
pub fn tag_of(template: &str, path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    template.replace("{path}", path).replace("{name}", name)
}

struct Browser<'s> {
    session: &'s Session,
    per_call: usize,
    cache: HashMap<NodeId, Vec<ReferenceDescription>>,
}

impl Browser<'_> {
    /// Forward hierarchical children of each node (cached).
    async fn children(&mut self, nodes: &[NodeId]) -> Result<(), String> {
        let todo: Vec<NodeId> = nodes
            .iter()
            .filter(|n| !self.cache.contains_key(n))
            .cloned()
            .collect();
        for chunk in todo.chunks(self.per_call.max(1)) {
            let descs: Vec<BrowseDescription> = chunk
                .iter()
                .map(|n| BrowseDescription {
                    node_id: n.clone(),
                    browse_direction: BrowseDirection::Forward,
                    reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                    include_subtypes: true,
                    node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
                    result_mask: BrowseResultMask::All as u32,
                })
                .collect();
            let results = self
                .session
                .browse(&descs, 0, None)
                .await
                .map_err(|e| format!("Browse failed: {e}"))?;
            for (n, r) in chunk.iter().zip(results) {
                let mut refs = r.references.unwrap_or_default();
                let mut cp = r.continuation_point;
                while !cp.is_null_or_empty() {
                    let next = self
                        .session
                        .browse_next(false, std::slice::from_ref(&cp))
                        .await
                        .map_err(|e| format!("BrowseNext failed: {e}"))?;
                    let Some(r) = next.into_iter().next() else {
                        break;
                    };
                    refs.extend(r.references.unwrap_or_default());
                    cp = r.continuation_point;
                }
                self.cache.insert(n.clone(), refs);
            }
        }
        Ok(())
    }

    async fn resolve_path(&mut self, path: &str) -> Result<NodeId, String> {
        let mut node = NodeId::objects_folder_id();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            let (ns, name) = match seg.split_once(':') {
                Some((n, rest)) if n.parse::<u16>().is_ok() => (n.parse::<u16>().ok(), rest),
                _ => (None, seg),
            };
            self.children(std::slice::from_ref(&node)).await?;
            let found = self.cache[&node].iter().find(|r| {
                r.browse_name.name.as_ref() == name
                    && ns.is_none_or(|ns| r.browse_name.namespace_index == ns)
            });
            let Some(r) = found else {
                return Err(format!("`{seg}` not found below {node}"));
            };
            node = r.node_id.node_id.clone();
        }
        Ok(node)
    }

    async fn node(&mut self, r: &NodeRef) -> Result<NodeId, String> {
        match r {
            NodeRef::Id(s) => s
                .parse::<NodeId>()
                .map_err(|_| format!("`{s}` is not a NodeId")),
            NodeRef::Path(p) => self.resolve_path(p).await,
        }
    }
}

/// Resolves everything; unresolvable entries come back as `(what, why)`.
pub async fn resolve(
    session: &Session,
    nodes: &[NodeSpec],
    browse: &[BrowseSpec],
    per_call: usize,
) -> Result<(Vec<Item>, Vec<(String, String)>), String> {
    let mut b = Browser {
        session,
        per_call,
        cache: HashMap::new(),
    };
    let mut items = Vec::new();
    let mut failed = Vec::new();
    for n in nodes {
        match b.node(&n.node).await {
            Ok(id) => {
                let tag = match (&n.tag, &n.node) {
                    (Some(t), _) => t.clone(),
                    (None, NodeRef::Path(p)) => p.clone(),
                    (None, NodeRef::Id(s)) => s.clone(),
                };
                items.push(Item {
                    tag,
                    node: id,
                    group: n.group,
                });
            }
            Err(e) => failed.push((n.node.to_string(), e)),
        }
    }
    for spec in browse {
        let root = match b.node(&spec.root).await {
            Ok(r) => r,
            Err(e) => {
                failed.push((format!("browse root {}", spec.root), e));
                continue;
            }
        };
        let include = globs(&spec.include)?;
        let exclude = globs(&spec.exclude)?;
        let before = items.len();
        // Breadth-first, one batched Browse per level.
        let mut level: Vec<(NodeId, String)> = vec![(root, String::new())];
        for _ in 0..spec.max_depth {
            if level.is_empty() {
                break;
            }
            let ids: Vec<NodeId> = level.iter().map(|(n, _)| n.clone()).collect();
            b.children(&ids).await?;
            let mut next = Vec::new();
            for (n, prefix) in &level {
                for r in &b.cache[n] {
                    if r.reference_type_id == ReferenceTypeId::HasProperty {
                        continue;
                    }
                    let name = r.browse_name.name.as_ref();
                    let path = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    match r.node_class {
                        NodeClass::Variable
                            if include.is_match(&path) && !exclude.is_match(&path) =>
                        {
                            items.push(Item {
                                tag: tag_of(&spec.tag, &path),
                                node: r.node_id.node_id.clone(),
                                group: spec.group,
                            });
                        }
                        NodeClass::Object => next.push((r.node_id.node_id.clone(), path)),
                        _ => {}
                    }
                }
            }
            level = next;
        }
        if items.len() == before {
            failed.push((
                format!("browse root {}", spec.root),
                "no variable below it matches the include/exclude patterns".into(),
            ));
        }
    }
    // One item per node: the first entry that named it wins.
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.node.clone()));
    Ok((items, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three processes' shares of 300 nodes: disjoint, all of them, none
    /// empty, and the same on every call (a stable hash of the id's text).
    #[test]
    fn processes_share_the_nodes_by_a_stable_hash() {
        let all: Vec<Item> = (0..300)
            .map(|i| Item {
                tag: format!("t{i}"),
                node: NodeId::new(2, format!("Plant/m{i}/power_kw")),
                group: 0,
            })
            .collect();
        let share = |p: usize| {
            let mut v = all.clone();
            assert!(keep_share(&mut v, (p, 3)));
            v.into_iter().map(|i| i.tag).collect::<Vec<_>>()
        };
        let shares: Vec<Vec<String>> = (0..3).map(share).collect();
        assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), 300);
        let mut tags: Vec<&String> = shares.iter().flatten().collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), 300, "each node on one process");
        assert!(
            shares.iter().all(|s| s.len() > 50),
            "{:?}",
            shares.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(share(1), shares[1]);
        let mut one = all.clone();
        assert!(keep_share(&mut one, (0, 1)) && one.len() == 300);
    }

    #[test]
    fn globs_respect_segments() {
        let g = globs(&["*/power_kw".into()]).unwrap();
        assert!(g.is_match("comp01/power_kw"));
        assert!(!g.is_match("line1/comp01/power_kw"));
        let g = globs(&["**/power_kw".into()]).unwrap();
        assert!(g.is_match("site1/line1/comp01/power_kw"));
        assert!(!g.is_match("site1/line1/comp01/energy_kwh"));
        assert!(globs(&["[".into()]).is_err());
    }

    #[test]
    fn tag_templates() {
        assert_eq!(tag_of("{path}", "s1/l1/m1/kw"), "s1/l1/m1/kw");
        assert_eq!(tag_of("plc1/{name}", "s1/l1/m1/kw"), "plc1/kw");
    }
}
