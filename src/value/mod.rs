//! The value layer: expressions, derived metrics, rules → findings → actions,
//! the action lifecycle, tariffs and billing, and M&V verification.
//!
//! Nothing here names timely or differential: the engine calls these
//! functions inside its operators.

pub mod expr;
pub mod layer;
pub mod lifecycle;
pub mod lowered;
pub mod mv;
pub mod rules;
pub mod tariff;
