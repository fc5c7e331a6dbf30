//! The catalog: what the control unit knows that is not a running workflow.
//!
//! - **Specs.** A spec is immutable once submitted: `name@version` names one content
//!   (hash) for good, durably (the store's `spec_refs`), so `Submit` by `name@version`
//!   works after a restart without sending the text again, and another text under a
//!   `name@version` already taken is refused. Compiled specs are cached by hash, bounded:
//!   the oldest entries are evicted, and found again in the store when asked for.
//! - **Skills.** The output fields of every registered skill, for spec checks.
//! - **Stored workflows.** Reading and listing workflows that left memory (terminal ones
//!   past `--retained-max`, until retention prunes them).
//!
//! Shared by the services behind an `Arc`; its locks are held for map operations only,
//! never across an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::ControlError;
use crate::model::WorkflowId;
use crate::scheduler::restore::workflow_from_snapshot;
use crate::spec::{CompiledSpec, SkillCatalog, SpecLimits, compile};
use crate::store::Store;
use crate::views::{ListQuery, Page, WorkflowSummary, WorkflowView};

/// Compiled specs kept in memory.
const SPECS_CACHED_MAX: usize = 4_096;

pub struct Catalog {
    specs: Mutex<SpecCache>,
    outputs: RwLock<HashMap<String, Vec<String>>>,
    store: Option<Arc<dyn Store>>,
    pub limits: SpecLimits,
}

/// Compiled specs by hash and `name@version`, evicted oldest first.
#[derive(Default)]
struct SpecCache {
    by_hash: HashMap<String, Arc<CompiledSpec>>,
    /// `name@version` → hash, for every accepted spec still cached.
    by_ref: HashMap<String, String>,
    order: VecDeque<String>,
}

impl SpecCache {
    fn insert(&mut self, spec: Arc<CompiledSpec>, accepted: bool) {
        if accepted {
            // The first content keeps its name (as in the store's `spec_refs`).
            self.by_ref
                .entry(reference(&spec))
                .or_insert_with(|| spec.hash.clone());
        }
        if self
            .by_hash
            .insert(spec.hash.clone(), spec.clone())
            .is_none()
        {
            self.order.push_back(spec.hash.clone());
        }
        while self.order.len() > SPECS_CACHED_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.by_hash.remove(&oldest) {
                let name = reference(&evicted);
                if self.by_ref.get(&name) == Some(&oldest) {
                    self.by_ref.remove(&name);
                }
            }
        }
    }
}

fn reference(spec: &CompiledSpec) -> String {
    format!("{}@{}", spec.name, spec.version)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Catalog {
    /// The store the catalog reads from, when there is one.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    pub fn new(limits: SpecLimits, store: Option<Arc<dyn Store>>) -> Self {
        Self {
            specs: Mutex::new(SpecCache::default()),
            outputs: RwLock::new(HashMap::new()),
            store,
            limits,
        }
    }

    /// Compiles a submitted spec text (or finds it compiled), and checks that its
    /// `name@version` is free or names this very content.
    pub async fn compile(&self, text: &str) -> Result<Arc<CompiledSpec>, ControlError> {
        let hash = crate::spec::content_hash(text);
        let cached = lock(&self.specs)
            .by_hash
            .get(&hash)
            .filter(|s| &*s.text == text)
            .cloned();
        let spec = match cached {
            Some(spec) => spec,
            None => Arc::new(compile(text, &self.limits).map_err(ControlError::InvalidSpec)?),
        };
        let name = reference(&spec);
        let known = lock(&self.specs).by_ref.get(&name).cloned();
        let taken_by = match known {
            Some(hash) => Some(hash),
            None => self.stored_ref(&spec.name, spec.version).await?,
        };
        if let Some(other) = taken_by.filter(|other| *other != spec.hash) {
            return Err(ControlError::AlreadyExists(format!(
                "spec {name} exists with other content (hash {other}); specs are immutable \
                 once submitted: give the changed spec a new version"
            )));
        }
        lock(&self.specs).insert(spec.clone(), false);
        Ok(spec)
    }

    /// The specs known by `name@version` (accepted and still cached), with their
    /// descriptions: what the A2A agent card lists as skills.
    pub fn known_specs(&self) -> Vec<(String, Option<String>)> {
        let specs = lock(&self.specs);
        let mut known: Vec<(String, Option<String>)> = specs
            .by_ref
            .iter()
            .filter_map(|(name, hash)| {
                let spec = specs.by_hash.get(hash)?;
                Some((name.clone(), spec.description.clone()))
            })
            .collect();
        known.sort();
        known
    }

    /// A workflow of `spec` was accepted: its `name@version` now names it (the actor
    /// stores the name with the workflow, in the same commit).
    pub fn accepted(&self, spec: &Arc<CompiledSpec>) {
        lock(&self.specs).insert(spec.clone(), true);
    }

    /// The spec submitted before as `name@version`, from memory or the store.
    pub async fn by_ref(&self, name_at_version: &str) -> Result<Arc<CompiledSpec>, ControlError> {
        let not_found = || {
            ControlError::NotFound(format!(
                "no spec `{name_at_version}` was submitted to this control unit; send spec_text"
            ))
        };
        let (name, version) = name_at_version
            .rsplit_once('@')
            .and_then(|(name, version)| Some((name, version.parse::<u32>().ok()?)))
            .ok_or_else(|| {
                ControlError::invalid(format!(
                    "spec_ref `{name_at_version}` is not NAME@VERSION (e.g. card-payment@1)"
                ))
            })?;
        {
            let specs = lock(&self.specs);
            if let Some(spec) = specs
                .by_ref
                .get(name_at_version)
                .and_then(|hash| specs.by_hash.get(hash))
            {
                return Ok(spec.clone());
            }
        }
        let Some(store) = &self.store else {
            return Err(not_found());
        };
        let (_, text) = store.spec(name, version).await?.ok_or_else(not_found)?;
        let spec = Arc::new(self.compile_stored(&text)?);
        lock(&self.specs).insert(spec.clone(), true);
        Ok(spec)
    }

    /// The spec named `name@version` if it is in memory (no store read): for the actor,
    /// which never waits on the store outside a commit.
    pub fn cached(&self, name_at_version: &str) -> Option<Arc<CompiledSpec>> {
        let specs = lock(&self.specs);
        let hash = specs.by_ref.get(name_at_version)?;
        specs.by_hash.get(hash).cloned()
    }

    /// A stored spec, compiled without the submission size limits (it was accepted once).
    pub fn compile_stored(&self, text: &str) -> Result<CompiledSpec, ControlError> {
        let limits = SpecLimits {
            spec_bytes_max: usize::MAX,
            tasks_max: usize::MAX,
            ..self.limits.clone()
        };
        compile(text, &limits).map_err(|errors| {
            ControlError::Internal(format!("a stored spec no longer compiles: {errors}"))
        })
    }

    /// Specs read back at start: cached and named, as accepted before the restart.
    pub fn recovered(&self, spec: Arc<CompiledSpec>) {
        lock(&self.specs).insert(spec, true);
    }

    async fn stored_ref(&self, name: &str, version: u32) -> Result<Option<String>, ControlError> {
        match &self.store {
            Some(store) => Ok(store.spec(name, version).await?.map(|(hash, _)| hash)),
            None => Ok(None),
        }
    }

    /// Records the output fields of a registered agent's skill.
    pub fn learn_skill(&self, skill: &str, output_schema: &str) {
        let Ok(schema) = serde_json::from_str::<serde_json::Value>(output_schema) else {
            return;
        };
        let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
            return;
        };
        let fields = properties.keys().cloned().collect();
        if let Ok(mut outputs) = self.outputs.write() {
            outputs.insert(skill.to_owned(), fields);
        }
    }

    /// A workflow that left memory, as its last snapshot holds it.
    pub async fn stored_workflow(
        &self,
        id: WorkflowId,
    ) -> Result<Option<WorkflowView>, ControlError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some((snapshot, text)) = store.load(id).await? else {
            return Ok(None);
        };
        let hash = crate::spec::content_hash(&text);
        let cached = lock(&self.specs).by_hash.get(&hash).cloned();
        let spec = match cached {
            Some(spec) => spec,
            None => Arc::new(self.compile_stored(&text)?),
        };
        let workflow = workflow_from_snapshot(snapshot, spec)
            .map_err(|e| ControlError::Internal(format!("stored workflow {id}: {e}")))?;
        let waiting = vec![String::new(); workflow.tasks.len()];
        Ok(Some(WorkflowView {
            workflow,
            waiting,
            approvals: Vec::new(),
        }))
    }

    /// A page of workflows: the actor's page of those in memory, merged with the store's
    /// (terminal workflows stay listable until retention prunes them). Memory wins for a
    /// workflow in both; the page ends where either source may have more.
    pub async fn list(&self, query: &ListQuery, memory: Page) -> Result<Page, ControlError> {
        let Some(store) = &self.store else {
            return Ok(memory);
        };
        let stored = store
            .list(crate::store::ListQuery {
                after: query.after,
                status: query.status,
                name: query.name.clone(),
                limit: query.page_size,
            })
            .await?;
        let stored: Vec<WorkflowSummary> = stored
            .iter()
            .filter_map(WorkflowSummary::of_snapshot)
            .collect();
        let mut boundary = None;
        if stored.len() == query.page_size {
            boundary = stored.last().map(|s| s.id);
        }
        if let Some(last) = memory.next {
            boundary = Some(boundary.map_or(last, |b: WorkflowId| b.min(last)));
        }
        let within = |id: WorkflowId| boundary.is_none_or(|b| id <= b);
        let mut merged: BTreeMap<WorkflowId, WorkflowSummary> = BTreeMap::new();
        for summary in stored
            .into_iter()
            .filter(|s| within(s.id) && query.matches(s))
        {
            merged.insert(summary.id, summary);
        }
        for summary in memory.workflows.into_iter().filter(|s| within(s.id)) {
            merged.insert(summary.id, summary);
        }
        Ok(Page {
            workflows: merged.into_values().collect(),
            next: boundary,
        })
    }
}

impl SkillCatalog for Catalog {
    fn output_fields(&self, skill: &str) -> Option<Vec<String>> {
        self.outputs.read().ok()?.get(skill).cloned()
    }
}
