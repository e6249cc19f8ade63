//! What every page's frame (templates/base.html) needs to know.

/// The signed-in person as the page header shows them.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub username: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub viewer: Option<Viewer>,
    /// The session's CSRF token, put into every form the page renders.
    pub csrf_token: String,
}

impl Layout {
    pub fn anonymous() -> Self {
        Layout::default()
    }
}
