//! Ingestion: the sources' port into the engine. Sources look tags up in the
//! [`TagRegistry`], normalise rows ([`normalize::Normalizer`]: quality,
//! lateness by the window [`Geometry`], dead letters) and hand batches to
//! the [`Ingest`] bridge, which partitions them by tag onto the workers'
//! bounded channels. Nothing here names timely: the engine drains the
//! channels on its side.

pub mod bridge;
pub mod field;
mod geometry;
pub mod normalize;
mod parse;
mod tags;
mod track;
pub mod wal;
pub mod watch;

pub use bridge::Ingest;
pub use geometry::Geometry;
pub use normalize::{ContextEdits, Normalizer, SourceCtx};
pub use tags::{InitialContext, TagRegistry, TagView};
pub use watch::TagWatch;
