//! The value layer: expressions, derived metrics, rules → findings → actions.
//!
//! Nothing here names timely or differential: the engine calls these
//! functions inside its operators.

pub mod expr;
pub mod rules;
