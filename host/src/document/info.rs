//! What the admin API shows of a live document.

use crate::document::live::Document;

/// What the admin API shows of a live document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DocumentInfo {
    /// The plugin.
    pub plugin: String,
    /// The plugin version serving it.
    pub version: String,
    /// The document id.
    pub document: String,
    /// Open connections.
    pub connections: usize,
    /// Linear memory of its instance.
    pub memory_bytes: u64,
    /// Messages from clients since it opened.
    pub messages: u64,
    /// Milliseconds since a guest call last ran.
    pub idle_ms: u64,
    /// Whether it changed since its last save.
    pub unsaved: bool,
    /// Its epoch in the shared store (0 with the file store).
    #[serde(default)]
    pub epoch: u64,
}

impl Document {
    /// The document as the admin API shows it.
    pub fn info(&self) -> DocumentInfo {
        DocumentInfo {
            plugin: self.plugin.name.clone(),
            version: self.plugin.version.clone(),
            document: self.id.clone(),
            connections: self.outboxes.len(),
            memory_bytes: self.memory_bytes,
            messages: self.messages,
            idle_ms: self.last_activity.elapsed().as_millis() as u64,
            unsaved: self.is_dirty(),
            epoch: self.persistence.lease.epoch,
        }
    }
}
