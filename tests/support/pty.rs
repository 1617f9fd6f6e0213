//! Runs the real binary in a pseudo-terminal through util-linux `script`, which needs no crate:
//! keys go to its stdin, the screen's bytes come from its stdout with arrival times.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output chunks with their arrival times.
type Chunks = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

pub struct Pty {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Everything the program wrote, with when each chunk arrived.
    out: Chunks,
    pub started: Instant,
}

/// Whether `script` (util-linux) is there; tests skip with a note when it is not.
pub fn available() -> bool {
    Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("util-linux"))
        .unwrap_or(false)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Removes escape sequences, leaving the text the terminal was asked to print.
pub fn strip_ansi(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('[') => {
                // CSI: parameters, then one final byte in @..~.
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: up to BEL or ST.
                while let Some(d) = it.next() {
                    if d == '\x07' || (d == '\x1b' && it.peek() == Some(&'\\')) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

impl Pty {
    /// Starts `bin args…` on a `cols`×`rows` pseudo-terminal with `envs` (and HF_* unset).
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &Path)], cols: u16, rows: u16) -> Pty {
        let mut cmdline = format!(
            "stty rows {rows} cols {cols}; exec {}",
            quote(&bin.display().to_string())
        );
        for a in args {
            cmdline.push(' ');
            cmdline.push_str(&quote(a));
        }
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &cmdline, "/dev/null"])
            .env("TERM", "xterm-256color")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .env_remove("HF_HOME")
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn script");
        let mut stdout = child.stdout.take().expect("stdout");
        let out: Chunks = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push((Instant::now(), buf[..n].to_vec()));
            }
        });
        Pty {
            stdin: child.stdin.take(),
            child,
            out,
            started,
        }
    }

    pub fn send(&mut self, keys: &[u8]) -> Instant {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(keys).expect("write keys");
        stdin.flush().expect("flush keys");
        Instant::now()
    }

    /// All output so far, raw.
    pub fn raw(&self) -> Vec<u8> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect()
    }

    /// All output so far, as text.
    pub fn text(&self) -> String {
        strip_ansi(&self.raw())
    }

    /// Waits until the text written after byte `from` contains `needle`; returns when the chunk
    /// that completed it arrived.
    pub fn wait_for_after(&self, from: usize, needle: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let chunks = self.out.lock().unwrap();
                let mut bytes = Vec::new();
                let mut seen = 0usize;
                for (t, b) in chunks.iter() {
                    let start = from.saturating_sub(seen).min(b.len());
                    seen += b.len();
                    if seen <= from {
                        continue;
                    }
                    bytes.extend_from_slice(&b[start..]);
                    if strip_ansi(&bytes).contains(needle) {
                        return Some(*t);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait_for_after(0, needle, timeout)
    }

    /// Bytes of output so far (a mark for `wait_for_after`).
    pub fn len(&self) -> usize {
        self.out.lock().unwrap().iter().map(|(_, b)| b.len()).sum()
    }

    /// Waits for the program to end (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
