//! The arithmetic subset of CEL, lowered to a typed tree over row slots.
//!
//! Derived metrics, `where` filters and sums are small expressions over a
//! window row: double arithmetic, comparisons, `!`, `&&`, `||` and `?:`.
//! Evaluating them through the `cel` interpreter builds a context, boxes
//! every value and looks every variable up by name, about 2,400
//! instructions per evaluation, which made CEL a third of a worker's time.
//! This module lowers such an expression once, after [`super::Expr`]
//! has checked it, into a tree whose leaves read the row's slots directly.
//!
//! The lowered tree keeps CEL's semantics for the subset exactly (the tests
//! compare it with the interpreter on random rows):
//! - doubles follow IEEE 754: `x / 0.0` is an infinity, nothing overflows;
//! - an `int` literal may only be compared with a double (`mean > 5`), as a
//!   double; `int` arithmetic and any other mix stay with the interpreter;
//! - ordering a NaN is an error, `NaN == x` is false;
//! - `&&` and `||` absorb an error on one side when the other side decides
//!   the result (`false && error` is `false`, in either order);
//! - a ternary evaluates only the branch it picks.
//!
//! Anything outside the subset (functions, strings other than `==`/`!=`,
//! lists, maps, mixed-type branches) is not lowered: the interpreter runs it.
//! An evaluation error is reported as [`Errs`]; the caller re-runs the
//! interpreter to get CEL's own message.

use cel::common::ast::operators as op;
use cel::common::ast::{Expr as Ast, LiteralValue};
use cel::IdedExpr;

use crate::model::{Scalar, F64};

use super::{ColType, Scope};

/// CEL errs on this row: the caller asks the interpreter for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errs;

/// A lowered expression: evaluate with [`Lowered::eval`].
#[derive(Debug)]
pub enum Lowered {
    Num(Num),
    Bool(Bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A double-valued node.
#[derive(Debug)]
pub enum Num {
    Lit(f64),
    Slot(usize),
    Neg(Box<Num>),
    Arith(Arith, Box<Num>, Box<Num>),
    Cond(Box<Bool>, Box<Num>, Box<Num>),
}

/// A bool-valued node.
#[derive(Debug)]
pub enum Bool {
    Lit(bool),
    Slot(usize),
    Not(Box<Bool>),
    And(Box<Bool>, Box<Bool>),
    Or(Box<Bool>, Box<Bool>),
    /// Numeric comparison (an int literal operand is already a double).
    CmpNum(Cmp, Box<Num>, Box<Num>),
    /// `==` (`eq` true) or `!=` on two bools.
    EqBool(bool, Box<Bool>, Box<Bool>),
    /// `==` (`eq` true) or `!=` between a string column and a literal.
    EqStr(bool, usize, String),
    Cond(Box<Bool>, Box<Bool>, Box<Bool>),
}

/// An operand before typing: int literals are kept apart, as CEL only lets
/// them meet a double in a comparison.
enum Typed {
    Num(Num),
    Bool(Bool),
    Int(i64),
    Str(Str),
}

enum Str {
    Lit(String),
    Slot(usize),
}

impl Lowered {
    /// Lowers `expr` over `scope`, or `None` if it leaves the subset.
    pub fn lower(expr: &IdedExpr, scope: &Scope) -> Option<Lowered> {
        match typed(expr, scope)? {
            Typed::Num(n) => Some(Lowered::Num(n)),
            Typed::Bool(b) => Some(Lowered::Bool(b)),
            Typed::Int(_) | Typed::Str(_) => None,
        }
    }

    /// Evaluates against a row in scope slot order; `Err(Errs)` where CEL errs.
    pub fn eval(&self, row: &[Scalar]) -> Result<Scalar, Errs> {
        match self {
            Lowered::Num(n) => num(n, row).map(|x| Scalar::Num(F64(x))),
            Lowered::Bool(b) => boolean(b, row).map(Scalar::Bool),
        }
    }
}

fn typed(e: &IdedExpr, scope: &Scope) -> Option<Typed> {
    match &e.expr {
        Ast::Literal(LiteralValue::Double(d)) => Some(Typed::Num(Num::Lit(*d.inner()))),
        Ast::Literal(LiteralValue::Int(i)) => Some(Typed::Int(*i.inner())),
        Ast::Literal(LiteralValue::Boolean(b)) => Some(Typed::Bool(Bool::Lit(*b.inner()))),
        Ast::Literal(LiteralValue::String(s)) => Some(Typed::Str(Str::Lit(s.inner().to_string()))),
        Ast::Ident(name) => {
            let slot = scope.slot(name)?;
            Some(match scope.cols[slot].1 {
                ColType::Num => Typed::Num(Num::Slot(slot)),
                ColType::Bool => Typed::Bool(Bool::Slot(slot)),
                ColType::Str => Typed::Str(Str::Slot(slot)),
            })
        }
        Ast::Call(call) if call.target.is_none() => {
            let args: Option<Vec<Typed>> = call.args.iter().map(|a| typed(a, scope)).collect();
            let mut args = args?.into_iter();
            let f = call.func_name.as_str();
            match (f, call.args.len()) {
                (op::NEGATE, 1) => match args.next()? {
                    Typed::Num(n) => Some(Typed::Num(Num::Neg(Box::new(n)))),
                    _ => None,
                },
                (op::LOGICAL_NOT, 1) => match args.next()? {
                    Typed::Bool(b) => Some(Typed::Bool(Bool::Not(Box::new(b)))),
                    _ => None,
                },
                (op::CONDITIONAL, 3) => {
                    let Typed::Bool(c) = args.next()? else {
                        return None;
                    };
                    match (args.next()?, args.next()?) {
                        (Typed::Num(a), Typed::Num(b)) => {
                            Some(Typed::Num(Num::Cond(Box::new(c), Box::new(a), Box::new(b))))
                        }
                        (Typed::Bool(a), Typed::Bool(b)) => Some(Typed::Bool(Bool::Cond(
                            Box::new(c),
                            Box::new(a),
                            Box::new(b),
                        ))),
                        _ => None,
                    }
                }
                (_, 2) => binary(f, args.next()?, args.next()?),
                _ => None,
            }
        }
        _ => None,
    }
}

fn binary(f: &str, a: Typed, b: Typed) -> Option<Typed> {
    let arith = match f {
        op::ADD => Some(Arith::Add),
        op::SUBSTRACT => Some(Arith::Sub),
        op::MULTIPLY => Some(Arith::Mul),
        op::DIVIDE => Some(Arith::Div),
        _ => None,
    };
    if let Some(arith) = arith {
        return match (a, b) {
            (Typed::Num(a), Typed::Num(b)) => {
                Some(Typed::Num(Num::Arith(arith, Box::new(a), Box::new(b))))
            }
            _ => None,
        };
    }
    let cmp = match f {
        op::LESS => Cmp::Lt,
        op::LESS_EQUALS => Cmp::Le,
        op::GREATER => Cmp::Gt,
        op::GREATER_EQUALS => Cmp::Ge,
        op::EQUALS => Cmp::Eq,
        op::NOT_EQUALS => Cmp::Ne,
        op::LOGICAL_AND | op::LOGICAL_OR => {
            return match (a, b) {
                (Typed::Bool(a), Typed::Bool(b)) => Some(Typed::Bool(if f == op::LOGICAL_AND {
                    Bool::And(Box::new(a), Box::new(b))
                } else {
                    Bool::Or(Box::new(a), Box::new(b))
                })),
                _ => None,
            };
        }
        _ => return None,
    };
    let as_num = |t: Typed| match t {
        Typed::Num(n) => Some(n),
        Typed::Int(i) => Some(Num::Lit(i as f64)),
        _ => None,
    };
    let eq = cmp == Cmp::Eq;
    match (a, b) {
        // Two int literals compare as ints: leave that to the interpreter.
        (Typed::Int(_), Typed::Int(_)) => None,
        (a @ (Typed::Num(_) | Typed::Int(_)), b @ (Typed::Num(_) | Typed::Int(_))) => {
            Some(Typed::Bool(Bool::CmpNum(
                cmp,
                Box::new(as_num(a)?),
                Box::new(as_num(b)?),
            )))
        }
        (Typed::Bool(a), Typed::Bool(b)) if matches!(cmp, Cmp::Eq | Cmp::Ne) => {
            Some(Typed::Bool(Bool::EqBool(eq, Box::new(a), Box::new(b))))
        }
        (Typed::Str(Str::Slot(s)), Typed::Str(Str::Lit(l)))
        | (Typed::Str(Str::Lit(l)), Typed::Str(Str::Slot(s)))
            if matches!(cmp, Cmp::Eq | Cmp::Ne) =>
        {
            Some(Typed::Bool(Bool::EqStr(eq, s, l)))
        }
        _ => None,
    }
}

fn num(n: &Num, row: &[Scalar]) -> Result<f64, Errs> {
    Ok(match n {
        Num::Lit(x) => *x,
        Num::Slot(s) => match row.get(*s) {
            Some(Scalar::Num(F64(x))) => *x,
            _ => return Err(Errs),
        },
        Num::Neg(a) => -num(a, row)?,
        Num::Arith(op, a, b) => {
            let (a, b) = (num(a, row)?, num(b, row)?);
            match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                Arith::Mul => a * b,
                Arith::Div => a / b,
            }
        }
        Num::Cond(c, a, b) => {
            if boolean(c, row)? {
                num(a, row)?
            } else {
                num(b, row)?
            }
        }
    })
}

fn boolean(b: &Bool, row: &[Scalar]) -> Result<bool, Errs> {
    Ok(match b {
        Bool::Lit(x) => *x,
        Bool::Slot(s) => match row.get(*s) {
            Some(Scalar::Bool(x)) => *x,
            _ => return Err(Errs),
        },
        Bool::Not(a) => !boolean(a, row)?,
        // CEL's logical operators are commutative over errors: a deciding
        // operand on either side wins.
        Bool::And(a, c) => match boolean(a, row) {
            Ok(false) => false,
            left => match (left, boolean(c, row)) {
                (_, Ok(false)) => false,
                (Ok(true), Ok(true)) => true,
                _ => return Err(Errs),
            },
        },
        Bool::Or(a, c) => match boolean(a, row) {
            Ok(true) => true,
            left => match (left, boolean(c, row)) {
                (_, Ok(true)) => true,
                (Ok(false), Ok(false)) => false,
                _ => return Err(Errs),
            },
        },
        Bool::CmpNum(op, a, c) => {
            let (a, c) = (num(a, row)?, num(c, row)?);
            match op {
                Cmp::Eq => a == c,
                Cmp::Ne => a != c,
                // Ordering a NaN is an error in CEL.
                _ => {
                    let o = a.partial_cmp(&c).ok_or(Errs)?;
                    match op {
                        Cmp::Lt => o.is_lt(),
                        Cmp::Le => o.is_le(),
                        Cmp::Gt => o.is_gt(),
                        _ => o.is_ge(),
                    }
                }
            }
        }
        Bool::EqBool(eq, a, c) => (boolean(a, row)? == boolean(c, row)?) == *eq,
        Bool::EqStr(eq, s, lit) => match row.get(*s) {
            Some(Scalar::Str(v)) => (v == lit) == *eq,
            _ => return Err(Errs),
        },
        Bool::Cond(c, a, d) => {
            if boolean(c, row)? {
                boolean(a, row)?
            } else {
                boolean(d, row)?
            }
        }
    })
}

#[cfg(test)]
mod tests {
    //! The oracle is the `cel` interpreter itself: every lowered expression
    //! must give the interpreter's value, and err exactly where it errs.
    use super::*;
    use crate::expr::Expr;
    use proptest::prelude::*;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.push("mean", ColType::Num);
        s.push("price", ColType::Num);
        s.push("standby", ColType::Num);
        s.push("producing", ColType::Bool);
        s.push("idle", ColType::Bool);
        s.push("kind", ColType::Str);
        s
    }

    fn check(source: &str, row: &[Scalar]) {
        let e = Expr::compile(source, &scope(), None).unwrap();
        assert!(
            e.is_lowered(),
            "`{source}` is in the subset but was not lowered"
        );
        // Compare the lowered tree alone: `Expr::eval` would hide its errors
        // behind the interpreter's answer.
        let fast = e.lowered().unwrap().eval(row);
        let slow = e.interpret(row).map_err(|_| Errs);
        match (&fast, &slow) {
            (Ok(Scalar::Num(F64(a))), Ok(Scalar::Num(F64(b)))) => assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "`{source}` on {row:?}: lowered {a}, cel {b}"
            ),
            _ => assert_eq!(fast, slow, "`{source}` on {row:?}"),
        }
    }

    fn num() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            Just(5.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -1e6..1e6f64,
        ]
    }

    fn row() -> impl Strategy<Value = Vec<Scalar>> {
        (
            num(),
            num(),
            num(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just("pump"), Just("fan")],
        )
            .prop_map(|(a, b, c, p, i, k)| {
                vec![
                    Scalar::Num(F64(a)),
                    Scalar::Num(F64(b)),
                    Scalar::Num(F64(c)),
                    Scalar::Bool(p),
                    Scalar::Bool(i),
                    Scalar::Str(k.to_string()),
                ]
            })
    }

    /// Random expressions of the subset, as CEL source, with their type.
    fn num_expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("mean".to_string()),
            Just("price".to_string()),
            Just("standby".to_string()),
            Just("60.0".to_string()),
            Just("0.0".to_string()),
            Just("-2.5".to_string()),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop_oneof![Just("+"), Just("-"), Just("*"), Just("/")],
                    inner.clone()
                )
                    .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
                inner.clone().prop_map(|a| format!("-({a})")),
                (bool_leaf(), inner.clone(), inner)
                    .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            ]
        })
    }

    fn bool_leaf() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("producing".to_string()),
            Just("idle".to_string()),
            Just("true".to_string()),
            Just("mean > standby".to_string()),
            Just("mean >= 5".to_string()),
            Just("1 < price".to_string()),
            Just("mean == 1".to_string()),
            Just("price != standby".to_string()),
            Just("kind == \"pump\"".to_string()),
            Just("\"fan\" != kind".to_string()),
            Just("producing == idle".to_string()),
        ]
    }

    fn bool_expr() -> impl Strategy<Value = String> {
        bool_leaf().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop_oneof![Just("&&"), Just("||")],
                    inner.clone()
                )
                    .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
                inner.clone().prop_map(|a| format!("!({a})")),
                (
                    num_expr(),
                    prop_oneof![
                        Just("<"),
                        Just("<="),
                        Just(">"),
                        Just(">="),
                        Just("=="),
                        Just("!=")
                    ],
                    num_expr()
                )
                    .prop_map(|(a, o, b)| format!("({a} {o} {b})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn numbers_match_the_interpreter(e in num_expr(), r in row()) {
            // The checker rejects expressions that err on its sample rows (e.g. `0.0 / 0.0 < x`).
            prop_assume!(Expr::compile(&e, &scope(), None).is_ok());
            check(&e, &r);
        }

        #[test]
        fn bools_match_the_interpreter(e in bool_expr(), r in row()) {
            prop_assume!(Expr::compile(&e, &scope(), None).is_ok());
            check(&e, &r);
        }
    }

    #[test]
    fn workload_rules_are_lowered_and_match() {
        for source in [
            "mean / 60.0",
            "mean * price",
            "!producing && mean > standby ? mean / 60.0 : 0.0",
            "mean > 0.0",
            "producing && idle && mean > 1.0",
            "producing || idle || mean < 1.0",
            // An erring side (ordering a NaN) absorbed by the deciding side, either order.
            "mean > standby && producing",
            "producing && mean > standby",
            "mean > standby || idle",
            "idle || mean > standby",
        ] {
            for m in [f64::NAN, 0.0, 30.0] {
                for p in [false, true] {
                    let row = vec![
                        Scalar::Num(F64(m)),
                        Scalar::Num(F64(0.2)),
                        Scalar::Num(F64(8.0)),
                        Scalar::Bool(p),
                        Scalar::Bool(!p),
                        Scalar::Str("pump".into()),
                    ];
                    check(source, &row);
                }
            }
        }
    }

    #[test]
    fn outside_the_subset_stays_with_the_interpreter() {
        for source in [
            "double(1) + mean",
            "kind + \"x\" == \"pumpx\"",
            "kind.startsWith(\"p\")",
            "1 < 2",
            "[1.0, 2.0][0] + mean",
        ] {
            let e = Expr::compile(source, &scope(), None).unwrap();
            assert!(!e.is_lowered(), "`{source}` should not be lowered");
        }
    }

    #[test]
    fn errors_give_the_interpreters_message() {
        let e = Expr::compile("mean > standby", &scope(), None).unwrap();
        let row = vec![
            Scalar::Num(F64(f64::NAN)),
            Scalar::Num(F64(0.0)),
            Scalar::Num(F64(1.0)),
            Scalar::Bool(false),
            Scalar::Bool(false),
            Scalar::Str(String::new()),
        ];
        let err = e.eval(&row).unwrap_err();
        assert_eq!(Err(err), e.interpret(&row));
    }
}
