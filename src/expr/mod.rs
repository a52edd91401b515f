//! Expressions in dataflow configs: CEL (the `cel` crate), compiled once,
//! checked against the columns in scope, evaluated per window row.
//!
//! # Types
//! Every number in scope is a CEL `double`, so `mean / 60.0` works and
//! `mean / 60` does not (CEL has no mixed int/double arithmetic); the checker
//! says so in its hint. Comparisons such as `mean > 5` are fine.
//!
//! # Checking
//! CEL here is dynamically typed, so an expression is checked by resolving its
//! variable names against the scope and evaluating it on two sample rows of
//! the right types; the result type must match what the config key expects.

use std::sync::Arc;

use cel::{Context, Env, Program, Value};

use crate::model::{Scalar, F64};

pub mod lowered;

use lowered::Lowered;

thread_local! {
    /// CEL's standard library, built once per thread: building it per
    /// evaluation (what `Context::default()` does) dominated run time.
    static STDLIB: Arc<Env> = Arc::new(Env::stdlib());
}

/// Type of a column in scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Num,
    Bool,
    Str,
}

impl ColType {
    pub fn name(self) -> &'static str {
        match self {
            ColType::Num => "number",
            ColType::Bool => "bool",
            ColType::Str => "string",
        }
    }
}

/// The columns an expression may use, in slot order.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub cols: Vec<(String, ColType)>,
}

impl Scope {
    pub fn push(&mut self, name: &str, t: ColType) {
        self.cols.push((name.to_string(), t));
    }
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|(n, _)| n == name)
    }
}

/// A checking failure: what is wrong and, where possible, what to write instead.
#[derive(Clone, Debug, PartialEq)]
pub struct ExprError {
    pub message: String,
    pub hint: Option<String>,
}

/// A compiled expression bound to the slots of a [`Scope`].
pub struct Expr {
    pub source: String,
    program: Program,
    /// (variable name, slot) for each variable the expression reads.
    vars: Vec<(String, usize)>,
    pub result: ColType,
    /// The same expression over row slots, when it is in the arithmetic subset.
    lowered: Option<Lowered>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

fn to_value(s: &Scalar) -> Value {
    match s {
        Scalar::Num(F64(x)) => Value::Float(*x),
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Str(s) => Value::String(Arc::new(s.clone())),
    }
}

fn from_value(v: Value) -> Option<Scalar> {
    match v {
        Value::Float(x) => Some(Scalar::Num(F64(x))),
        Value::Int(i) => Some(Scalar::Num(F64(i as f64))),
        Value::UInt(u) => Some(Scalar::Num(F64(u as f64))),
        Value::Bool(b) => Some(Scalar::Bool(b)),
        Value::String(s) => Some(Scalar::Str(s.as_str().to_string())),
        _ => None,
    }
}

fn type_of(s: &Scalar) -> ColType {
    match s {
        Scalar::Num(_) => ColType::Num,
        Scalar::Bool(_) => ColType::Bool,
        Scalar::Str(_) => ColType::Str,
    }
}

impl Expr {
    /// Compiles and checks `source` against `scope`; `want` is the required
    /// result type (`None` accepts number or bool).
    pub fn compile(source: &str, scope: &Scope, want: Option<ColType>) -> Result<Expr, ExprError> {
        let program = Program::compile(source).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            let first = first
                .trim_start_matches("ERROR: <input>:")
                .split_once(": ")
                .map(|(pos, msg)| format!("{msg} at {pos}"))
                .unwrap_or(first);
            ExprError {
                message: format!(
                    "expression `{source}` does not parse: {}",
                    first.to_lowercase()
                ),
                hint: None,
            }
        })?;
        let mut vars = Vec::new();
        for name in program.references().variables() {
            match scope.slot(name) {
                Some(slot) => vars.push((name.to_string(), slot)),
                None => {
                    return Err(ExprError {
                        message: format!("unknown column `{name}` in expression `{source}`"),
                        hint: crate::model::did_you_mean(
                            name,
                            scope.cols.iter().map(|(n, _)| n.as_str()),
                        )
                        .or_else(|| {
                            Some(format!(
                                "columns in scope: {}",
                                scope
                                    .cols
                                    .iter()
                                    .map(|(n, _)| n.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }),
                    })
                }
            }
        }
        vars.sort();
        vars.dedup();
        let mut expr = Expr {
            source: source.to_string(),
            program,
            vars,
            result: ColType::Num,
            lowered: None,
        };
        // Evaluate on two sample rows to find type errors and the result type.
        let mut result = None;
        for variant in 0..2 {
            let row: Vec<Scalar> = scope
                .cols
                .iter()
                .map(|(_, t)| match t {
                    ColType::Num => Scalar::Num(F64(1.0 + variant as f64)),
                    ColType::Bool => Scalar::Bool(variant == 1),
                    ColType::Str => Scalar::Str(String::new()),
                })
                .collect();
            match expr.eval(&row) {
                Ok(v) => result = Some(type_of(&v)),
                Err(msg) => {
                    let hint = if msg.contains("Int(") || msg.contains("int") {
                        Some("numbers are doubles: write `60.0`, not `60` (CEL does not mix int and double)".to_string())
                    } else {
                        None
                    };
                    return Err(ExprError {
                        message: format!("expression `{source}` does not type-check: {msg}"),
                        hint,
                    });
                }
            }
        }
        let got = result.unwrap_or(ColType::Num);
        let ok = match want {
            Some(w) => w == got,
            None => got != ColType::Str,
        };
        if !ok {
            let want_name = want.map(|w| w.name()).unwrap_or("number or bool");
            return Err(ExprError {
                message: format!(
                    "expression `{source}` gives a {}, expected a {want_name}",
                    got.name()
                ),
                hint: None,
            });
        }
        expr.result = got;
        expr.lowered = Lowered::lower(expr.program.expression(), scope);
        Ok(expr)
    }

    /// Whether the expression runs on the lowered fast path.
    pub fn is_lowered(&self) -> bool {
        self.lowered.is_some()
    }

    /// The scope slots the expression reads.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.vars.iter().map(|(_, slot)| *slot)
    }

    /// The lowered form, if any.
    pub fn lowered(&self) -> Option<&Lowered> {
        self.lowered.as_ref()
    }

    /// Evaluates against a row laid out in scope slot order.
    pub fn eval(&self, row: &[Scalar]) -> Result<Scalar, String> {
        match &self.lowered {
            // An error re-runs the interpreter for CEL's own message.
            Some(l) => l.eval(row).or_else(|_| self.interpret(row)),
            None => self.interpret(row),
        }
    }

    /// Evaluates with the `cel` interpreter.
    pub fn interpret(&self, row: &[Scalar]) -> Result<Scalar, String> {
        let mut ctx = STDLIB.with(|env| Context::with_env(env.clone()));
        for (name, slot) in &self.vars {
            ctx.add_variable_from_value(name.as_str(), to_value(&row[*slot]));
        }
        match self.program.execute(&ctx) {
            Ok(v) => {
                from_value(v).ok_or_else(|| "result is not a number, bool or string".to_string())
            }
            Err(e) => Err(describe(&e)),
        }
    }

    /// Evaluates to a number (bools count as 0/1); errors become NaN.
    pub fn eval_num(&self, row: &[Scalar]) -> f64 {
        match self.eval(row) {
            Ok(Scalar::Num(F64(x))) => x,
            Ok(Scalar::Bool(b)) => b as u8 as f64,
            _ => f64::NAN,
        }
    }

    /// Evaluates to a bool; anything else is false.
    pub fn eval_bool(&self, row: &[Scalar]) -> bool {
        matches!(self.eval(row), Ok(Scalar::Bool(true)))
    }
}

fn describe(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::UnsupportedBinaryOperator(op, a, b) => {
            format!("`{op}` is not defined for {} and {}", kind(a), kind(b))
        }
        E::UndeclaredReference(name) => format!("unknown function or variable `{name}`"),
        other => other.to_string(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Null => "null",
        _ => "a structured value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.push("mean", ColType::Num);
        s.push("standby_kw", ColType::Num);
        s.push("producing", ColType::Bool);
        s.push("kind", ColType::Str);
        s
    }

    #[test]
    fn evaluates_waste_rule() {
        let e = Expr::compile(
            "!producing && mean > standby_kw ? mean / 60.0 : 0.0",
            &scope(),
            Some(ColType::Num),
        )
        .unwrap();
        let row = vec![
            Scalar::Num(F64(30.0)),
            Scalar::Num(F64(8.0)),
            Scalar::Bool(false),
            Scalar::Str("compressor".into()),
        ];
        assert_eq!(e.eval(&row), Ok(Scalar::Num(F64(0.5))));
    }

    #[test]
    fn rejects_unknown_column_with_hint() {
        let err = Expr::compile("maen > 1.0", &scope(), Some(ColType::Bool)).unwrap_err();
        assert_eq!(
            err.message,
            "unknown column `maen` in expression `maen > 1.0`"
        );
        assert_eq!(err.hint.as_deref(), Some("did you mean `mean`?"));
    }

    #[test]
    fn rejects_mixed_arithmetic() {
        let err = Expr::compile("mean / 60", &scope(), Some(ColType::Num)).unwrap_err();
        assert_eq!(
            err.message,
            "expression `mean / 60` does not type-check: `div` is not defined for double and int"
        );
        assert!(err.hint.unwrap().contains("60.0"));
    }

    #[test]
    fn rejects_wrong_result_type() {
        let err = Expr::compile("mean * 2.0", &scope(), Some(ColType::Bool)).unwrap_err();
        assert_eq!(
            err.message,
            "expression `mean * 2.0` gives a number, expected a bool"
        );
    }
}
