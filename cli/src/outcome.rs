//! What a command's run comes to: its exit code and what it measured
//! (for the metrics textfile).

use crate::metrics;

/// A command's exit code and what it measured.
#[derive(Default)]
pub(crate) struct Done {
    pub(crate) code: u8,
    pub(crate) figures: metrics::Figures,
}

impl Done {
    pub(crate) fn with(figures: metrics::Figures) -> Done {
        Done { code: 0, figures }
    }
}
