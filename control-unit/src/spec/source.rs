//! Where things are in a spec's text, so validation errors can name a line and column.
//!
//! serde_norway does not keep spans for values, so this scans the text for the lines that
//! open each task (`- id: NAME`, or `"id": "NAME"` in JSON) and for keys inside a task's
//! block. It handles block-style YAML and pretty-printed JSON, which is what operators
//! write; for flow-style documents it finds nothing and errors carry no line.

/// A position in the spec text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// Line positions of tasks and their keys.
#[derive(Debug, Default)]
pub struct SourceMap {
    /// (task id, position of its `id` key), in document order.
    tasks: Vec<(String, Position)>,
    lines: Vec<String>,
}

impl SourceMap {
    pub fn new(text: &str) -> Self {
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut tasks = Vec::new();
        let mut in_tasks = false;
        for (index, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if !line.starts_with(' ') && !line.starts_with('\t') && !trimmed.starts_with('-') {
                in_tasks = key_of(trimmed) == Some("tasks");
            }
            if trimmed.starts_with("\"tasks\"") {
                in_tasks = true;
            }
            if !in_tasks {
                continue;
            }
            let item = trimmed.strip_prefix('-').map_or(trimmed, str::trim_start);
            if key_of(item) == Some("id")
                && let Some(value) = value_of(item)
            {
                let column = (line.len() - item.len()) as u32 + 1;
                tasks.push((
                    value,
                    Position {
                        line: index as u32 + 1,
                        column,
                    },
                ));
            }
        }
        Self { tasks, lines }
    }

    /// Where the task with this id is declared (its first declaration).
    pub fn task(&self, id: &str) -> Option<Position> {
        self.tasks
            .iter()
            .find(|(name, _)| name == id)
            .map(|(_, p)| *p)
    }

    /// Where the `nth` (0-based) declaration of the task with this id is.
    pub fn task_occurrence(&self, id: &str, nth: usize) -> Option<Position> {
        self.tasks
            .iter()
            .filter(|(name, _)| name == id)
            .nth(nth)
            .map(|(_, p)| *p)
    }

    /// Where `key` is written inside the block of task `id`, falling back to the task.
    pub fn task_key(&self, id: &str, key: &str) -> Option<Position> {
        let start = self.task(id)?;
        let end = self
            .tasks
            .iter()
            .map(|(_, p)| p.line)
            .filter(|line| *line > start.line)
            .min()
            .unwrap_or(self.lines.len() as u32 + 1);
        // A task's keys start on its id line's item or below; search the item's own block.
        let first = self.block_start(start.line);
        for line_no in first..end {
            let line = &self.lines[(line_no - 1) as usize];
            let trimmed = line.trim_start();
            let item = trimmed.strip_prefix('-').map_or(trimmed, str::trim_start);
            if key_of(item) == Some(key) {
                return Some(Position {
                    line: line_no,
                    column: (line.len() - item.len()) as u32 + 1,
                });
            }
        }
        Some(start)
    }

    /// The task whose block contains this line, if any.
    pub fn task_at_line(&self, line: u32) -> Option<&str> {
        self.tasks
            .iter()
            .rev()
            .find(|(_, p)| p.line <= line)
            .map(|(name, _)| name.as_str())
    }

    /// The `- ` line opening the item that holds `line` (a task's keys may precede `id`).
    fn block_start(&self, line: u32) -> u32 {
        let mut current = line;
        while current > 1 {
            let text = &self.lines[(current - 1) as usize];
            if text.trim_start().starts_with('-') || text.trim_start().starts_with('{') {
                return current;
            }
            current -= 1;
        }
        line
    }
}

/// The key of a `key: value` (or `"key": value`) line.
fn key_of(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let (key, _) = text.split_once(':')?;
    let key = key.trim().trim_matches('"').trim_matches('\'');
    if key.is_empty() || key.contains(' ') {
        return None;
    }
    Some(key)
}

/// The scalar value of a `key: value` line, unquoted, without a trailing comma or comment.
fn value_of(text: &str) -> Option<String> {
    let (_, value) = text.split_once(':')?;
    let value = value
        .split(" #")
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches(',');
    let value = value.trim().trim_matches('"').trim_matches('\'');
    if value.is_empty() {
        return None;
    }
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tasks_and_keys_in_yaml() {
        let text = "name: x\ntasks:\n  - id: a\n    skill: s\n  - id: b\n    needs: [a]\n    timeout: 5x\n";
        let map = SourceMap::new(text);
        assert_eq!(map.task("a"), Some(Position { line: 3, column: 5 }));
        assert_eq!(map.task("b").map(|p| p.line), Some(5));
        assert_eq!(map.task_key("b", "timeout").map(|p| p.line), Some(7));
        assert_eq!(map.task_at_line(6), Some("b"));
    }

    #[test]
    fn finds_tasks_in_pretty_json() {
        let text = "{\n  \"tasks\": [\n    {\n      \"id\": \"a\",\n      \"skill\": \"s\"\n    }\n  ]\n}\n";
        let map = SourceMap::new(text);
        assert_eq!(map.task("a").map(|p| p.line), Some(4));
    }
}
