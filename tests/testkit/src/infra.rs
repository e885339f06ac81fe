//! What infra/ gives the processes that sign in to PostgreSQL, read out of the Bicep by
//! `tests/infra/app_env.py` (with the Python named by `PYTHON`, which scripts/test.sh
//! points at the checkers' virtual environment and its Bicep parser): each app's
//! environment, the bootstrap job's, and the Dapr components in the shape daprd loads.
//! What only Azure knows (the server's host name, the identities' names and ids) comes as
//! placeholders, which [`Facts`] fills with the local stand-ins' values; a placeholder
//! nobody filled in fails the test, so a new reference in the Bicep cannot go unnoticed.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

/// One environment variable.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// Its value, placeholders and all.
    pub value: String,
}

/// Everything `app_env.py` reads.
#[derive(Debug, Clone, Deserialize)]
pub struct InfraEnv {
    /// Each app's container environment, by service (azure.yaml).
    pub apps: BTreeMap<String, Vec<EnvVar>>,
    /// Each job's container environment, by its module in main.bicep (`bootstrap`).
    pub jobs: BTreeMap<String, Vec<EnvVar>>,
    /// Each Dapr component, as a Dapr component document.
    pub components: BTreeMap<String, serde_json::Value>,
}

impl InfraEnv {
    /// What infra/ says now (read once per test process).
    pub fn get() -> &'static Self {
        static CELL: OnceLock<InfraEnv> = OnceLock::new();
        CELL.get_or_init(|| {
            let root = crate::workspace_root();
            let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
            let output = Command::new(&python)
                .arg(root.join("tests/infra/app_env.py"))
                .current_dir(&root)
                .output()
                .unwrap_or_else(|e| panic!("run {python} tests/infra/app_env.py: {e}"));
            assert!(
                output.status.success(),
                "tests/infra/app_env.py failed (PYTHON must have the checkers' packages: \
                 scripts/test.sh sets it):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).expect("the JSON of app_env.py")
        })
    }
}

/// What the placeholders stand for here: `{postgres.host}` → `localhost`, and so on.
#[derive(Debug, Clone, Default)]
pub struct Facts(BTreeMap<String, String>);

impl Facts {
    /// States that the placeholder `{name}` is `value` here.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(format!("{{{name}}}"), value.to_owned());
    }

    /// `text` with every placeholder filled in; panics at one it does not know.
    pub fn fill(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .unwrap_or_else(|| panic!("an unclosed placeholder in {text:?}"));
            let placeholder = &rest[open..=close];
            let value = self.0.get(placeholder).unwrap_or_else(|| {
                panic!(
                    "infra/ reads {placeholder}, which the Azure-mode tests do not know yet: \
                     give it a local value in testkit's azure_mode.rs ({text:?})"
                )
            });
            out.push_str(value);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// An environment with its placeholders filled in.
    pub fn env(&self, vars: &[EnvVar]) -> Vec<(String, String)> {
        vars.iter()
            .map(|v| (v.name.clone(), self.fill(&v.value)))
            .collect()
    }

    /// A JSON document with the placeholders of its strings filled in.
    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::String(s) => serde_json::Value::String(self.fill(s)),
            serde_json::Value::Array(items) => items.iter().map(|v| self.json(v)).collect(),
            serde_json::Value::Object(map) => {
                map.iter().map(|(k, v)| (k.clone(), self.json(v))).collect()
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_text_around_them_kept() {
        let mut facts = Facts::default();
        facts.set("postgres.host", "localhost");
        facts.set("identities.dataName", "id-data");
        assert_eq!(
            facts.fill("host={postgres.host} port=5432 user={identities.dataName} x"),
            "host=localhost port=5432 user=id-data x"
        );
    }

    #[test]
    #[should_panic(expected = "{identities.other}")]
    fn an_unknown_placeholder_fails() {
        Facts::default().fill("{identities.other}");
    }
}
