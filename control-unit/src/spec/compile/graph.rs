//! The task graph's checks: an order without cycles (a cycle is reported as the tasks
//! in it), and every reference to a task's output pointing at a task upstream that has
//! an output.

use regex::Regex;

use super::{Checker, suggestion};
use crate::spec::raw::RawTask;
use crate::spec::{CompiledTask, InputDecl, Reference, TaskKind};

impl Checker<'_> {
    /// Kahn's algorithm; on a cycle, reports it as `a -> b -> c -> a`.
    pub(super) fn topological_order(&mut self, tasks: &[CompiledTask]) -> Option<Vec<u32>> {
        let mut indegree: Vec<usize> = tasks.iter().map(|t| t.needs.len()).collect();
        let mut queue: Vec<u32> = (0..tasks.len() as u32)
            .filter(|i| indegree[*i as usize] == 0)
            .collect();
        let mut order = Vec::with_capacity(tasks.len());
        while let Some(next) = queue.pop() {
            order.push(next);
            for &dependent in &tasks[next as usize].dependents {
                indegree[dependent as usize] -= 1;
                if indegree[dependent as usize] == 0 {
                    queue.push(dependent);
                }
            }
        }
        if order.len() == tasks.len() {
            return Some(order);
        }
        // Walk `needs` from a task left in a cycle until a task repeats.
        let start = (0..tasks.len()).find(|i| indegree[*i] > 0).unwrap_or(0);
        let mut path: Vec<usize> = vec![start];
        let mut current = start;
        loop {
            let next = tasks[current]
                .needs
                .iter()
                .map(|n| *n as usize)
                .find(|n| indegree[*n] > 0)
                .unwrap_or(start);
            if let Some(at) = path.iter().position(|p| *p == next) {
                let mut cycle: Vec<&str> = path[at..]
                    .iter()
                    .rev()
                    .map(|i| tasks[*i].id.as_str())
                    .collect();
                cycle.push(cycle[0]);
                let first = cycle[0].to_owned();
                self.task_error(
                    &first,
                    Some("needs"),
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                );
                return None;
            }
            path.push(next);
            current = next;
        }
    }

    pub(super) fn check_references(
        &mut self,
        tasks: &[CompiledTask],
        order: &[u32],
        inputs: &[InputDecl],
        raw: &[RawTask],
    ) {
        // ancestors[i] holds every task that finishes before task i may start.
        let words = tasks.len().div_ceil(64);
        let mut ancestors = vec![vec![0u64; words]; tasks.len()];
        for &i in order {
            let i = i as usize;
            for &need in &tasks[i].needs {
                let need = need as usize;
                let (inherited, bit) = (ancestors[need].clone(), need);
                for (word, value) in ancestors[i].iter_mut().zip(inherited) {
                    *word |= value;
                }
                ancestors[i][bit / 64] |= 1 << (bit % 64);
            }
        }
        let is_ancestor = |of: usize, candidate: usize| {
            ancestors[of][candidate / 64] & (1 << (candidate % 64)) != 0
        };
        let when_task = Regex::new(r"tasks\.([A-Za-z0-9_\-]+)").ok();
        for task in tasks {
            let me = task.index as usize;
            let mut checks: Vec<(&Reference, &'static str, bool)> = task
                .input
                .references()
                .into_iter()
                .map(|r| (r, "with", false))
                .collect();
            if let Some(route) = &task.route {
                for (_, template) in &route.labels {
                    checks.extend(
                        template
                            .references()
                            .into_iter()
                            .map(|r| (r, "route", false)),
                    );
                }
            }
            if let Some(compensate) = &task.compensate {
                checks.extend(
                    compensate
                        .input
                        .references()
                        .into_iter()
                        .map(|r| (r, "compensate", true)),
                );
                for (_, template) in compensate.route.iter().flat_map(|r| &r.labels) {
                    checks.extend(
                        template
                            .references()
                            .into_iter()
                            .map(|r| (r, "compensate", true)),
                    );
                }
            }
            if let Some(prompt) = task.approval().and_then(|a| a.prompt.as_ref()) {
                checks.extend(
                    prompt
                        .references()
                        .into_iter()
                        .map(|r| (r, "approval", false)),
                );
            }
            for (reference, key, may_reference_self) in checks {
                match reference {
                    Reference::Input { name, .. } if !inputs.iter().any(|d| &d.name == name) => {
                        self.task_error(
                            &task.id,
                            Some(key),
                            format!("`{key}` references undeclared input `inputs.{name}`"),
                        );
                    }
                    Reference::TaskOutput { task: target, .. } => {
                        self.check_task_reference(
                            tasks,
                            task,
                            key,
                            target,
                            may_reference_self,
                            &is_ancestor,
                            me,
                        );
                    }
                    _ => {}
                }
            }
            let required_when = raw[me]
                .approval
                .as_ref()
                .and_then(|a| a.required_when.as_ref());
            for (key, condition) in [("when", raw[me].when.as_ref()), ("approval", required_when)] {
                if let (Some(condition), Some(regex)) = (condition, &when_task) {
                    for capture in regex.captures_iter(condition) {
                        let target = &capture[1];
                        self.check_task_reference(
                            tasks,
                            task,
                            key,
                            target,
                            false,
                            &is_ancestor,
                            me,
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_task_reference(
        &mut self,
        tasks: &[CompiledTask],
        task: &CompiledTask,
        key: &str,
        target: &str,
        may_reference_self: bool,
        is_ancestor: &dyn Fn(usize, usize) -> bool,
        me: usize,
    ) {
        match tasks.iter().position(|t| t.id == target) {
            None => {
                let names = tasks.iter().map(|t| &t.id);
                self.task_error(
                    &task.id,
                    Some(key),
                    format!(
                        "`{key}` references the output of unknown task `{target}`{}",
                        suggestion(target, names)
                    ),
                );
            }
            Some(found) if found == me && may_reference_self => {}
            Some(found) if found == me => {
                self.task_error(
                    &task.id,
                    Some(key),
                    format!("`{key}` references its own output"),
                );
            }
            Some(found) if !is_ancestor(me, found) => {
                self.task_error(&task.id, Some(key), format!(
                    "`{key}` references the output of `{target}`, which is not upstream: add `{target}` to needs"
                ));
            }
            Some(found) if matches!(tasks[found].kind, TaskKind::Checkpoint { verify: None }) => {
                self.task_error(&task.id, Some(key), format!(
                    "`{key}` references the output of checkpoint `{target}`, which has no verify skill and so no output"
                ));
            }
            Some(_) => {}
        }
    }
}
