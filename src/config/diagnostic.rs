//! Config diagnostics: one problem, where it is, and what to do about it.
//!
//! Validators never compute locations themselves: they name a key path
//! (`window.size`, `rules[0].action.owner`) and the loader resolves it to a
//! byte span through the document's [`SpanIndex`](super::spans::SpanIndex).

use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Level, Origin, Renderer, Snippet};

/// One configuration problem.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column of the span start (0 when the file has no text).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `rules[0].condition`; empty for whole-file problems.
    pub key_path: String,
    pub message: String,
    pub hint: Option<String>,
    pub span: Range<usize>,
}

impl Diagnostic {
    /// Renders the diagnostic against the file's text, without colour.
    pub fn render(&self, source: &str) -> String {
        let label = if self.key_path.is_empty() {
            String::new()
        } else {
            format!("key `{}`", self.key_path)
        };
        let path = self.file.display().to_string();
        let mut group = if source.is_empty() || self.span.start >= source.len() {
            Level::ERROR.primary_title(self.message.as_str()).element(
                Origin::path(path.as_str())
                    .line(self.line)
                    .char_column(self.column),
            )
        } else {
            let end = self.span.end.min(source.len()).max(self.span.start);
            Level::ERROR.primary_title(self.message.as_str()).element(
                Snippet::source(source)
                    .path(path.as_str())
                    .fold(true)
                    .annotation(
                        AnnotationKind::Primary
                            .span(self.span.start..end)
                            .label(label.as_str()),
                    ),
            )
        };
        if let Some(h) = &self.hint {
            group = group.element(Level::HELP.message(h.as_str()));
        }
        Renderer::plain().render(&[group]).to_string()
    }

    /// One line: `file:line:col: key: message (hint)`.
    pub fn short(&self) -> String {
        let mut s = format!("{}:{}:{}: ", self.file.display(), self.line, self.column);
        if !self.key_path.is_empty() {
            s.push_str(&format!("{}: ", self.key_path));
        }
        s.push_str(&self.message);
        if let Some(h) = &self.hint {
            s.push_str(&format!(" (help: {h})"));
        }
        s
    }
}

/// Every problem found in one or more config files.
#[derive(Debug)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
    /// The text of each file, for rendering snippets.
    pub sources: Vec<(PathBuf, String)>,
}

impl ConfigErrors {
    /// All diagnostics rendered, followed by a count line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            let src = self
                .sources
                .iter()
                .find(|(p, _)| p == &d.file)
                .map(|(_, s)| s.as_str())
                .unwrap_or("");
            out.push_str(&d.render(src));
            out.push_str("\n\n");
        }
        let n = self.diagnostics.len();
        out.push_str(&format!(
            "error: {} problem{} found; nothing was run",
            n,
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| at - i).unwrap_or(at + 1);
    (line, col)
}

pub(crate) fn file_diag(file: &Path, message: String, hint: Option<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        key_path: String::new(),
        message,
        hint,
        span: 0..0,
    }
}
