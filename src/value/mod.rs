//! The value layer: derived metrics, rules → findings → actions,
//! the action lifecycle, billing, and M&V verification.
//!
//! Nothing here names timely or differential: the engine calls these
//! functions inside its operators.

pub mod layer;
pub mod lifecycle;
pub mod mv;
pub mod rules;
