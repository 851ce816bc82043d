//! Starting, watching and stopping the server processes of [`super::servers`] and
//! [`super::brokers`]: each runs in its temp dir with stdout and stderr in a log file there.

use std::fmt::Debug;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to pass its readiness check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `program` with `args` in `dir`, stdout and stderr to a new file `log`.
pub fn spawn_logged(program: &str, args: &[String], dir: &Path, log: &Path) -> Child {
    let log = File::create(log).expect("create the process log");
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} does not start (is it installed?): {e}"))
}

/// Waits until `ready()` holds; fails the test, with the end of `log`, when `child` exits
/// first or after [`READY_TIMEOUT`]. `what` names the process in the message.
pub fn wait_ready(
    what: &dyn Debug,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) {
    let t0 = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what:?} exited with {status} before it was ready:\n{}",
                log_tail(log)
            );
        }
        assert!(
            t0.elapsed() < READY_TIMEOUT,
            "{what:?} not ready after {READY_TIMEOUT:?}:\n{}",
            log_tail(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with SIGTERM, SIGKILL after 15 s.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills `child` at once, if there is one (on drop: nothing is left running after a test).
pub fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last 3000 bytes or so of the log at `path`, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(3000);
    text[text.floor_char_boundary(start)..].to_owned()
}
