//! The pipeline validator's view of the stages this host has loaded: their
//! names and the JSON Schema each one's `describe` returned.

use stagecraft_pipeline::StageCatalog;
use stagecraft_runtime::Runtime;

/// A [`StageCatalog`] over a runtime's current stage versions.
pub struct RuntimeCatalog<'a>(pub &'a Runtime);

impl StageCatalog for RuntimeCatalog<'_> {
    fn params_schema(&self, stage: &str) -> Option<serde_json::Value> {
        self.0.stage(stage).map(|v| v.info.params_schema.clone())
    }

    fn stage_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.stages().iter().map(|v| v.info.name.clone()).collect();
        names.sort();
        names
    }
}
