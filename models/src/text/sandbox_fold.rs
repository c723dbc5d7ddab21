//! A check of a chat template's constant expressions before minijinja compiles it: the
//! compiler folds constant expressions (`'x' * 100000000 ~ 'x' * 100000000 ~ ...`) at compile
//! time, outside the checked operations of [`super::sandbox`]. Each constant expression's
//! value size is bounded here, from the syntax tree, without evaluating anything large.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};

/// Bytes a value counts for when its size is not its length (numbers, booleans, ...).
const SCALAR: u64 = 16;

/// The first constant expression whose folded value would exceed `max_bytes`, as its
/// bound in bytes; `None` when there is none.
pub(crate) fn oversized_constant(stmt: &Stmt<'_>, max_bytes: u64) -> Option<u64> {
    let mut walk = Walk {
        max_bytes,
        found: None,
    };
    walk.stmt(stmt);
    walk.found
}

struct Walk {
    max_bytes: u64,
    found: Option<u64>,
}

impl Walk {
    fn stmts(&mut self, stmts: &[Stmt<'_>]) {
        for s in stmts {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, stmt: &Stmt<'_>) {
        if self.found.is_some() {
            return;
        }
        match stmt {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(f) => {
                self.expr(&f.target);
                self.expr(&f.iter);
                if let Some(e) = &f.filter_expr {
                    self.expr(e);
                }
                self.stmts(&f.body);
                self.stmts(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr);
                self.stmts(&c.true_body);
                self.stmts(&c.false_body);
            }
            Stmt::WithBlock(w) => {
                for (a, b) in &w.assignments {
                    self.expr(a);
                    self.expr(b);
                }
                self.stmts(&w.body);
            }
            Stmt::Set(s) => {
                self.expr(&s.target);
                self.expr(&s.expr);
            }
            Stmt::SetBlock(s) => {
                self.expr(&s.target);
                if let Some(f) = &s.filter {
                    self.expr(f);
                }
                self.stmts(&s.body);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Import(i) => {
                self.expr(&i.expr);
                self.expr(&i.name);
            }
            Stmt::FromImport(i) => {
                self.expr(&i.expr);
                for (a, b) in &i.names {
                    self.expr(a);
                    if let Some(b) = b {
                        self.expr(b);
                    }
                }
            }
            Stmt::Extends(e) => self.expr(&e.name),
            Stmt::Include(i) => self.expr(&i.name),
            Stmt::Macro(m) => {
                self.exprs(&m.args);
                self.exprs(&m.defaults);
                self.stmts(&m.body);
            }
            Stmt::CallBlock(c) => {
                self.expr(&c.call.expr);
                self.args(&c.call.args);
                self.exprs(&c.macro_decl.args);
                self.exprs(&c.macro_decl.defaults);
                self.stmts(&c.macro_decl.body);
            }
            Stmt::Continue(_) | Stmt::Break(_) => {}
            Stmt::Do(d) => {
                self.expr(&d.call.expr);
                self.args(&d.call.args);
            }
        }
    }

    fn exprs(&mut self, exprs: &[Expr<'_>]) {
        for e in exprs {
            self.expr(e);
        }
    }

    fn args(&mut self, args: &[CallArg<'_>]) {
        for a in args {
            match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn expr(&mut self, e: &Expr<'_>) {
        self.bound(e);
    }

    /// An upper bound of the bytes of `e`'s folded value when `e` is constant (`None`
    /// otherwise), walking every sub-expression.
    fn bound(&mut self, e: &Expr<'_>) -> Option<u64> {
        if self.found.is_some() {
            return None;
        }
        let b = match e {
            Expr::Const(c) => Some(match c.value.as_str() {
                Some(s) => s.len() as u64,
                None => c.value.len().map_or(SCALAR, |n| n as u64 * SCALAR),
            }),
            Expr::List(l) => self.all_const(l.items.iter()),
            Expr::Map(m) => self.all_const(m.keys.iter().chain(m.values.iter())),
            Expr::UnaryOp(u) => self.bound(&u.expr).map(|_| SCALAR),
            Expr::BinOp(op) => {
                let l = self.bound(&op.left);
                let r = self.bound(&op.right);
                let (l, r) = (l?, r?);
                Some(match op.op {
                    BinOpKind::Add | BinOpKind::Concat => l.saturating_add(r),
                    BinOpKind::Mul => {
                        // Small operands are safe to fold here to learn the count.
                        let count = |size: u64, e: &Expr<'_>| {
                            (size <= SCALAR)
                                .then(|| e.as_const())
                                .flatten()
                                .and_then(|v| i64::try_from(v).ok())
                                .map(|n| n.max(0) as u64)
                        };
                        match (count(r, &op.right), count(l, &op.left)) {
                            (Some(n), _) => l.saturating_mul(n),
                            (None, Some(n)) => r.saturating_mul(n),
                            (None, None) => SCALAR,
                        }
                    }
                    _ => l.max(r).max(SCALAR),
                })
            }
            Expr::Compare(c) => {
                self.bound(&c.expr);
                for op in &c.ops {
                    self.bound(&op.expr);
                }
                None
            }
            Expr::Var(_) => None,
            Expr::Slice(s) => {
                self.bound(&s.expr);
                for e in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.bound(e);
                }
                None
            }
            Expr::IfExpr(i) => {
                self.bound(&i.test_expr);
                self.bound(&i.true_expr);
                if let Some(f) = &i.false_expr {
                    self.bound(f);
                }
                None
            }
            Expr::Filter(f) => {
                if let Some(e) = &f.expr {
                    self.bound(e);
                }
                self.args(&f.args);
                None
            }
            Expr::Test(t) => {
                self.bound(&t.expr);
                self.args(&t.args);
                None
            }
            Expr::GetAttr(g) => {
                self.bound(&g.expr);
                None
            }
            Expr::GetItem(g) => {
                self.bound(&g.expr);
                self.bound(&g.subscript_expr);
                None
            }
            Expr::Call(c) => {
                self.bound(&c.expr);
                self.args(&c.args);
                None
            }
        };
        if let Some(size) = b {
            if size > self.max_bytes {
                self.found = Some(size);
                return None;
            }
        }
        b
    }

    fn all_const<'e, 'a: 'e>(&mut self, items: impl Iterator<Item = &'e Expr<'a>>) -> Option<u64> {
        let mut total = Some(SCALAR);
        for e in items {
            let b = self.bound(e);
            total = match (total, b) {
                (Some(t), Some(b)) => Some(t.saturating_add(b)),
                _ => None,
            };
        }
        total
    }
}
