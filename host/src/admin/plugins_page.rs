//! The answer of `GET /api/plugins` (and the first event of the live
//! stream): every loaded plugin with its counts, and every rejected file
//! with its reason.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use serde_json::{json, Value};

use crate::telemetry::plugin_states::PluginStates;
use crate::{plugins::isolation::supervisor::WorkerState, plugins::loaded::LoadedPlugin};

/// Renders the plugins of `loaded` and the rejected files of `states`.
pub(crate) fn render(
    states: &PluginStates,
    loaded: &BTreeMap<PathBuf, Arc<LoadedPlugin>>,
    open_connections: i64,
) -> Value {
    let retired = states.retired();
    let mut list: Vec<Value> = loaded
        .values()
        .map(|p| {
            let stats = p.stats();
            let worker = p.worker().map(|w| w.status());
            let status = match worker.as_ref().map(|w| &w.state) {
                Some(WorkerState::Failed(_)) => "failed",
                _ => "loaded",
            };
            let mut entry = json!({
                "name": p.name,
                "version": p.version,
                "api_version": p.api_version,
                "file": p.file,
                "types": p.types().collect::<Vec<_>>(),
                "handlers": p.handlers.iter().map(|h| json!({
                    "types": h.types, "mode": h.mode(),
                })).collect::<Vec<_>>(),
                "status": status,
                "isolation": p.isolation().as_str(),
                "loaded_at": p.loaded_at,
                "calls": stats.calls,
                "errors": stats.errors,
                "panics": stats.panics,
                "timeouts": stats.timeouts,
                "retired_versions": retired.get(&p.name).copied().unwrap_or(0),
            });
            if let Some(worker) = worker {
                entry["worker"] = json!({
                    "state": match &worker.state {
                        WorkerState::Running => "running",
                        WorkerState::Restarting => "restarting",
                        WorkerState::Failed(_) => "failed",
                    },
                    "pid": worker.pid,
                    "crashes": worker.crashes,
                    "restarts": worker.restarts,
                    "kills": worker.kills,
                });
                entry["crashes"] = json!(worker.crashes);
                entry["restarts"] = json!(worker.restarts);
                if let WorkerState::Failed(reason) = &worker.state {
                    entry["reason"] = json!(reason);
                }
            }
            entry
        })
        .collect();
    for rejected in states.rejected() {
        let identity = rejected.identity.as_ref();
        list.push(json!({
            "name": identity.map(|i| &i.name),
            "version": identity.map(|i| &i.version),
            "file": rejected.file,
            "types": identity.map(|i| i.types.clone()).unwrap_or_default(),
            "status": "rejected",
            "reason": rejected.reason,
            "rejected_at": rejected.at,
        }));
    }
    json!({ "plugins": list, "connections": open_connections })
}
