//! Container runtime: container groups as local process groups.
//!
//! A deployment (create, update, start, restart) is one *generation* of a group. Its runner
//! task walks the provisioning state machine
//!
//! ```text
//! Pending ──► Creating ──(pull each image: Pulling → Pulled | Failed)──► Succeeded
//!                 │                                                  └► containers Running
//!                 └──(pull failed)──► Failed
//! ```
//!
//! and then hands each container to its own task, which runs the command as a process in a
//! new session (`setsid`, so the process is the leader of its own process group), captures
//! stdout/stderr line by line into a bounded [`LogBuffer`], records the exit code and applies
//! the restart policy (`Always`, `OnFailure`, `Never`), keeping the previous state and
//! counting restarts like ACI.
//!
//! When the main process exits, the rest of its process group is killed, as everything in a
//! container dies with its PID 1. Stop, delete, redeploy and shutdown cancel the generation:
//! tasks send SIGTERM to the whole process group, then SIGKILL after the configured grace.
//! Tasks of an old generation never touch the group entry again (they check the generation
//! number under the lock), so a redeploy cannot be confused by a late exit.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arm_models::{ContainerInstanceView, ContainerState, ErrorDetail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ImageRule;
use crate::state::{
    add_event, lock, now_rfc3339, set_op, ContainerRt, GroupEntry, LogBuffer, SharedRef,
};

/// Environment variables passed through from the emulator's own environment.
const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR", "SHELL",
];

/// Runs `f` on the group `key` if it still exists and is at generation `gen`.
fn with_group<R>(
    shared: &SharedRef,
    key: &str,
    gen: u64,
    f: impl FnOnce(&mut GroupEntry) -> R,
) -> Option<R> {
    let mut state = lock(&shared.state);
    let g = state.groups.get_mut(key)?;
    if g.generation != gen {
        return None;
    }
    Some(f(g))
}

/// The first image rule matching `image`.
pub(crate) fn find_rule<'a>(rules: &'a [ImageRule], image: &str) -> Option<&'a ImageRule> {
    rules.iter().find(|r| r.matches(image))
}

/// Starts a new generation of group `key`: cancels the old one and spawns the runner.
/// `op_id` is completed when provisioning ends.
pub(crate) fn deploy(shared: &SharedRef, key: &str, op_id: Option<String>) {
    let (gen, old_cancel, old_tracker) = {
        let mut state = lock(&shared.state);
        let Some(g) = state.groups.get_mut(key) else {
            return;
        };
        let old_cancel = std::mem::replace(&mut g.cancel, shared.shutdown.child_token());
        let old_tracker = std::mem::replace(&mut g.tracker, TaskTracker::new());
        g.generation += 1;
        let previous_op = std::mem::replace(&mut g.current_op, op_id.clone());
        g.provisioning_state = "Pending".to_string();
        g.instance_state = Some("Pending".to_string());
        let limit = shared.config.log_limit_bytes;
        g.containers = g
            .spec
            .containers
            .iter()
            .map(|c| ContainerRt {
                name: c.name.clone(),
                view: ContainerInstanceView::default(),
                pid: None,
                active: false,
                logs: Arc::new(Mutex::new(LogBuffer::new(limit))),
            })
            .collect();
        let gen = g.generation;
        if let Some(op) = previous_op {
            set_op(&mut state, &op, "Canceled", None);
        }
        (gen, old_cancel, old_tracker)
    };
    old_cancel.cancel();
    let shared2 = shared.clone();
    let key = key.to_string();
    shared.tasks.spawn(async move {
        old_tracker.close();
        old_tracker.wait().await;
        run_group(shared2, key, gen, op_id).await;
    });
}

async fn sleep_or_cancel(ms: u64, cancel: &CancellationToken) -> bool {
    if ms == 0 {
        return !cancel.is_cancelled();
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        _ = cancel.cancelled() => false,
    }
}

async fn run_group(shared: SharedRef, key: String, gen: u64, op_id: Option<String>) {
    let Some((cancel, images, name)) = with_group(&shared, &key, gen, |g| {
        g.provisioning_state = "Creating".to_string();
        let images: Vec<(String, String)> = g
            .spec
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.properties.image.clone()))
            .collect();
        (g.cancel.clone(), images, g.name.clone())
    }) else {
        return;
    };
    if let Some(op) = &op_id {
        set_op(&mut lock(&shared.state), op, "Running", None);
    }
    let finish_op = |status: &str, error: Option<ErrorDetail>| {
        if let Some(op) = &op_id {
            set_op(&mut lock(&shared.state), op, status, error);
        }
    };
    // Pull each image.
    for (idx, (_, image)) in images.iter().enumerate() {
        let msg = format!("pulling image \"{image}\"");
        if with_group(&shared, &key, gen, |g| {
            if let Some(c) = g.containers.get_mut(idx) {
                c.view.current_state = Some(ContainerState {
                    state: "Waiting".into(),
                    detail_status: Some("Pulling".into()),
                    ..Default::default()
                });
                add_event(&mut c.view.events, "Pulling", msg, "Normal");
            }
        })
        .is_none()
        {
            return;
        }
        if !sleep_or_cancel(shared.config.pull_delay_ms, &cancel).await {
            finish_op("Canceled", None);
            return;
        }
        let failure = match find_rule(&shared.config.images, image) {
            None => Some(format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to resolve reference \"{image}\": not found"
            )),
            Some(rule) => rule.pull_error.as_ref().map(|e| format!("Failed to pull image \"{image}\": {e}")),
        };
        if let Some(message) = failure {
            with_group(&shared, &key, gen, |g| {
                if let Some(c) = g.containers.get_mut(idx) {
                    add_event(&mut c.view.events, "Failed", message.clone(), "Warning");
                    c.view.current_state = Some(ContainerState {
                        state: "Waiting".into(),
                        detail_status: Some("ErrImagePull".into()),
                        ..Default::default()
                    });
                }
                g.provisioning_state = "Failed".into();
                // ACI leaves the group Pending when provisioning fails (see the spec's
                // ContainerGroupsGet_Failed example); provisioningState carries the failure.
                g.instance_state = Some("Pending".into());
            });
            finish_op(
                "Failed",
                Some(ErrorDetail::new(
                    "InaccessibleImage",
                    format!(
                        "The image '{image}' in container group '{name}' is not accessible. Please check the image and registry credential."
                    ),
                )),
            );
            return;
        }
        with_group(&shared, &key, gen, |g| {
            if let Some(c) = g.containers.get_mut(idx) {
                add_event(
                    &mut c.view.events,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\""),
                    "Normal",
                );
            }
        });
    }
    let delay = shared
        .faults()
        .provisioning_delay_ms
        .unwrap_or(shared.config.provisioning_delay_ms);
    if !sleep_or_cancel(delay, &cancel).await {
        finish_op("Canceled", None);
        return;
    }
    // Start the containers.
    let Some(launches) = with_group(&shared, &key, gen, |g| {
        let mut out = Vec::new();
        for idx in 0..g.containers.len() {
            g.containers[idx].active = true;
            out.push((idx, g.tracker.clone()));
        }
        g.provisioning_state = "Succeeded".into();
        g.instance_state = Some("Running".into());
        out
    }) else {
        return;
    };
    for (idx, tracker) in launches {
        let shared2 = shared.clone();
        let key2 = key.clone();
        let cancel2 = cancel.clone();
        tracker.spawn(async move { run_container(shared2, key2, gen, idx, cancel2).await });
    }
    finish_op("Succeeded", None);
}

/// How to launch one container.
struct Launch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    restart_policy: String,
    logs: Arc<Mutex<LogBuffer>>,
}

fn plan(shared: &SharedRef, g: &GroupEntry, idx: usize) -> Result<Launch, String> {
    let container = g.spec.containers.get(idx).ok_or("container vanished")?;
    let props = &container.properties;
    let rule = find_rule(&shared.config.images, &props.image)
        .cloned()
        .unwrap_or_default();
    let mut argv: Vec<String> = match &props.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ => rule.command.clone(),
    };
    if let Some(first) = argv.first() {
        if let Some(replacement) = rule.entrypoint_aliases.get(first) {
            let rest: Vec<String> = argv[1..].to_vec();
            argv = replacement.iter().cloned().chain(rest).collect();
        }
    }
    if argv.is_empty() {
        return Err(format!(
            "no command specified for image \"{}\" and none configured in the image table",
            props.image
        ));
    }
    // Environment: inherited basics < platform < image < container.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v));
    };
    for k in INHERITED_ENV {
        if let Ok(v) = std::env::var(k) {
            set(k, v);
        }
    }
    if !rule.path_prepend.is_empty() {
        let mut parts: Vec<String> = rule
            .path_prepend
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        if let Ok(p) = std::env::var("PATH") {
            parts.push(p);
        }
        set("PATH", parts.join(":"));
    }
    set(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        format!("{}/_imds/{}", shared.base_url, g.imds_key),
    );
    set("AZURE_RESOURCE_MANAGER_ENDPOINT", shared.base_url.clone());
    set("AZURE_AUTHORITY_HOST", shared.base_url.clone());
    if let Some(bundle) = &shared.ca_bundle_path {
        // The emulator serves HTTPS with its own CA: trust it (plus the system roots).
        set("SSL_CERT_FILE", bundle.display().to_string());
        set("REQUESTS_CA_BUNDLE", bundle.display().to_string());
    }
    for (k, v) in &rule.env {
        set(k, v.clone());
    }
    for var in props.environment_variables.iter().flatten() {
        match (&var.value, &var.secure_value, &var.secure_value_reference) {
            (Some(v), _, _) | (None, Some(v), _) => set(&var.name, v.clone()),
            // A Key Vault reference cannot be resolved locally: leave the variable unset.
            (None, None, Some(_)) => {}
            // A bare name is an empty variable.
            (None, None, None) => set(&var.name, String::new()),
        }
    }
    let default_dir = shared
        .work_root
        .join(sanitize(&g.resource_group.to_ascii_lowercase()))
        .join(sanitize(&g.name))
        .join(sanitize(&container.name));
    let cwd = match &rule.working_dir {
        Some(dir) if std::fs::create_dir_all(dir).is_ok() => dir.clone(),
        _ => {
            std::fs::create_dir_all(&default_dir)
                .map_err(|e| format!("cannot create {}: {e}", default_dir.display()))?;
            default_dir
        }
    };
    let logs = g
        .containers
        .get(idx)
        .map(|c| c.logs.clone())
        .ok_or("container vanished")?;
    Ok(Launch {
        argv,
        env,
        cwd,
        restart_policy: g
            .spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        logs,
    })
}

/// Keeps a name safe as one path component.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Sends `sig` to the process group led by `pid`.
pub(crate) fn signal_group(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses
            // the process group, which we created with setsid.
            unsafe {
                libc::kill(-pid, sig);
            }
        }
    }
}

/// Longest line kept as one log line; longer output is split (a process printing without
/// newlines must not grow memory without bound).
const MAX_LINE: usize = 64 * 1024;

async fn pump<R: AsyncRead + Unpin>(reader: R, logs: Arc<Mutex<LogBuffer>>) {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    let flush = |line: &mut Vec<u8>| {
        while line.last().is_some_and(|b| *b == b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(line).into_owned();
        lock(&logs).push(crate::state::log_timestamp(), text);
        line.clear();
    };
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(c) if !c.is_empty() => c,
            _ => break,
        };
        let room = MAX_LINE - line.len();
        let (take, newline) = match chunk.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len().min(room), false),
        };
        let end = if newline { take - 1 } else { take };
        line.extend_from_slice(&chunk[..end]);
        reader.consume(take);
        if newline || line.len() >= MAX_LINE {
            flush(&mut line);
        }
    }
    if !line.is_empty() {
        flush(&mut line);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn run_container(
    shared: SharedRef,
    key: String,
    gen: u64,
    idx: usize,
    cancel: CancellationToken,
) {
    loop {
        let Some(plan) = with_group(&shared, &key, gen, |g| plan(&shared, g, idx)) else {
            return;
        };
        let launch = match plan {
            Ok(l) => l,
            Err(message) => {
                let terminal = record_start_failure(&shared, &key, gen, idx, &message, "Never");
                if terminal {
                    return;
                }
                continue;
            }
        };
        let mut cmd = tokio::process::Command::new(&launch.argv[0]);
        cmd.args(&launch.argv[1..])
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&launch.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls setsid and
        // prctl, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // If the emulator dies without cleaning up (SIGKILL), take the container's
                // main process with it instead of leaving an orphan.
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let message = format!(
                    "Error: failed to start container: exec: \"{}\": {e}",
                    launch.argv[0]
                );
                if record_start_failure(&shared, &key, gen, idx, &message, &launch.restart_policy) {
                    return;
                }
                if !sleep_or_cancel(backoff(&shared, &key, gen, idx), &cancel).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id();
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, launch.logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, launch.logs.clone())));
        }
        let started = with_group(&shared, &key, gen, |g| {
            let image = g
                .spec
                .containers
                .get(idx)
                .map(|c| c.properties.image.clone())
                .unwrap_or_default();
            if let Some(c) = g.containers.get_mut(idx) {
                c.pid = pid;
                if c.view
                    .current_state
                    .as_ref()
                    .is_some_and(|s| s.state == "Terminated")
                {
                    c.view.previous_state = c.view.current_state.take();
                    c.view.restart_count += 1;
                }
                c.view.current_state = Some(ContainerState {
                    state: "Running".into(),
                    start_time: Some(now_rfc3339()),
                    detail_status: Some(String::new()),
                    ..Default::default()
                });
                add_event(
                    &mut c.view.events,
                    "Started",
                    format!("Started container with image \"{image}\""),
                    "Normal",
                );
            }
        });
        if started.is_none() {
            // The generation moved on while spawning: do not leave an orphan.
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            let _ = child.wait().await;
            return;
        }
        let (code, killed) = tokio::select! {
            status = child.wait() => (status.map(exit_code).unwrap_or(-1), false),
            _ = cancel.cancelled() => {
                with_group(&shared, &key, gen, |g| {
                    if let Some(c) = g.containers.get_mut(idx) {
                        add_event(&mut c.view.events, "Killing", "Killing container".to_string(), "Normal");
                    }
                });
                if let Some(pid) = pid {
                    signal_group(pid, libc::SIGTERM);
                }
                let grace = Duration::from_millis(shared.config.kill_grace_ms);
                let status = match tokio::time::timeout(grace, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        if let Some(pid) = pid {
                            signal_group(pid, libc::SIGKILL);
                        }
                        child.wait().await
                    }
                };
                (status.map(exit_code).unwrap_or(-1), true)
            }
        };
        // PID 1 is gone: the rest of the container goes with it.
        if let Some(pid) = pid {
            signal_group(pid, libc::SIGKILL);
        }
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        let policy = launch.restart_policy.as_str();
        let restart = !killed
            && !cancel.is_cancelled()
            && (policy.eq_ignore_ascii_case("Always")
                || (policy.eq_ignore_ascii_case("OnFailure") && code != 0));
        let still_ours = with_group(&shared, &key, gen, |g| {
            if let Some(c) = g.containers.get_mut(idx) {
                c.pid = None;
                let start_time = c
                    .view
                    .current_state
                    .as_ref()
                    .and_then(|s| s.start_time.clone());
                c.view.current_state = Some(ContainerState {
                    state: "Terminated".into(),
                    start_time,
                    exit_code: Some(code),
                    finish_time: Some(now_rfc3339()),
                    detail_status: Some(
                        if killed {
                            "Killed"
                        } else if code == 0 {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into(),
                    ),
                });
                if restart {
                    add_event(
                        &mut c.view.events,
                        "BackOff",
                        "Back-off restarting failed container".to_string(),
                        "Warning",
                    );
                } else {
                    c.active = false;
                }
            }
            if !restart {
                recompute_group_state(g);
            }
        });
        if still_ours.is_none() || !restart {
            return;
        }
        if !sleep_or_cancel(backoff(&shared, &key, gen, idx), &cancel).await {
            with_group(&shared, &key, gen, |g| {
                if let Some(c) = g.containers.get_mut(idx) {
                    c.active = false;
                }
                recompute_group_state(g);
            });
            return;
        }
    }
}

/// The pause before the next restart: `restart_delay_ms` doubled per restart so far (up to
/// 32×, at most 5 minutes), like the platform's crash-loop back-off.
fn backoff(shared: &SharedRef, key: &str, gen: u64, idx: usize) -> u64 {
    let restarts = with_group(shared, key, gen, |g| {
        g.containers
            .get(idx)
            .map(|c| c.view.restart_count)
            .unwrap_or(0)
    })
    .unwrap_or(0);
    shared
        .config
        .restart_delay_ms
        .saturating_mul(1u64 << restarts.min(5))
        .min(300_000)
}

/// Records a container that could not start. Returns true when no restart follows.
fn record_start_failure(
    shared: &SharedRef,
    key: &str,
    gen: u64,
    idx: usize,
    message: &str,
    policy: &str,
) -> bool {
    let restart = policy.eq_ignore_ascii_case("Always") || policy.eq_ignore_ascii_case("OnFailure");
    with_group(shared, key, gen, |g| {
        if let Some(c) = g.containers.get_mut(idx) {
            add_event(&mut c.view.events, "Failed", message.to_string(), "Warning");
            lock(&c.logs).push(crate::state::log_timestamp(), message.to_string());
            if c.view
                .current_state
                .as_ref()
                .is_some_and(|s| s.state == "Terminated")
            {
                c.view.previous_state = c.view.current_state.take();
                c.view.restart_count += 1;
            }
            let now = now_rfc3339();
            c.view.current_state = Some(ContainerState {
                state: "Terminated".into(),
                start_time: Some(now.clone()),
                exit_code: Some(127),
                finish_time: Some(now),
                detail_status: Some("Error".into()),
            });
            if !restart {
                c.active = false;
            }
        }
        if !restart {
            recompute_group_state(g);
        }
    })
    .is_none()
        || !restart
}

/// Sets the group instance state once no container is managed any more.
pub(crate) fn recompute_group_state(g: &mut GroupEntry) {
    if g.containers.iter().any(|c| c.active) || g.instance_state.as_deref() == Some("Stopped") {
        return;
    }
    let all_ok = g
        .containers
        .iter()
        .all(|c| c.view.current_state.as_ref().and_then(|s| s.exit_code) == Some(0));
    g.instance_state = Some(if all_ok { "Succeeded" } else { "Failed" }.to_string());
}

/// Stops the current generation of `key` (optionally marking it `Stopped`) and waits for
/// its processes to die. Returns false when the group does not exist.
pub(crate) async fn stop_group(shared: &SharedRef, key: &str, mark_stopped: bool) -> bool {
    let tracker = {
        let mut state = lock(&shared.state);
        let Some(g) = state.groups.get_mut(key) else {
            return false;
        };
        if mark_stopped {
            g.instance_state = Some("Stopped".to_string());
        }
        g.cancel.cancel();
        g.tracker.clone()
    };
    tracker.close();
    let grace = Duration::from_millis(shared.config.kill_grace_ms) + Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, tracker.wait()).await;
    true
}

/// Kills the running processes of a group as if they crashed (SIGKILL, no cancellation):
/// the restart policy then applies. Returns how many processes were signalled.
pub(crate) fn crash(shared: &SharedRef, key: &str, container: Option<&str>) -> Option<usize> {
    let state = lock(&shared.state);
    let g = state.groups.get(key)?;
    let mut n = 0;
    for c in &g.containers {
        if container.is_some_and(|name| name != c.name) {
            continue;
        }
        if let Some(pid) = c.pid {
            signal_group(pid, libc::SIGKILL);
            n += 1;
        }
    }
    Some(n)
}
