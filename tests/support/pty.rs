//! Runs the real binary in a pseudo-terminal through util-linux `script`, which needs no crate:
//! keys go to its stdin; its output is applied to a small virtual screen (the cursor moves and
//! erases ratatui sends), so that checks read what a person would see, with arrival times.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The escape sequences ratatui's crossterm backend writes, enough to know what is on screen.
struct Screen {
    cols: usize,
    rows: usize,
    cells: Vec<char>,
    row: usize,
    col: usize,
    /// Bytes of an unfinished UTF-8 character or escape sequence, from the last chunk.
    pending: Vec<u8>,
}

impl Screen {
    fn new(cols: usize, rows: usize) -> Screen {
        Screen {
            cols,
            rows,
            cells: vec![' '; cols * rows],
            row: 0,
            col: 0,
            pending: vec![],
        }
    }

    fn text(&self) -> String {
        self.cells
            .chunks(self.cols)
            .map(|r| r.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn clear(&mut self, from: usize, to: usize) {
        let to = to.min(self.cells.len());
        for c in &mut self.cells[from.min(to)..to] {
            *c = ' ';
        }
    }

    fn csi(&mut self, params: &str, fin: char) {
        let nums: Vec<usize> = params
            .trim_start_matches('?')
            .split(';')
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        let n = |i: usize, d: usize| nums.get(i).copied().filter(|&v| v > 0).unwrap_or(d);
        let here = self.row * self.cols + self.col;
        match fin {
            'H' | 'f' => {
                self.row = (n(0, 1) - 1).min(self.rows - 1);
                self.col = (n(1, 1) - 1).min(self.cols - 1);
            }
            'A' => self.row = self.row.saturating_sub(n(0, 1)),
            'B' => self.row = (self.row + n(0, 1)).min(self.rows - 1),
            'C' => self.col = (self.col + n(0, 1)).min(self.cols - 1),
            'D' => self.col = self.col.saturating_sub(n(0, 1)),
            'G' => self.col = (n(0, 1) - 1).min(self.cols - 1),
            'J' => match nums.first().copied().unwrap_or(0) {
                0 => self.clear(here, self.cells.len()),
                1 => self.clear(0, here + 1),
                _ => self.clear(0, self.cells.len()),
            },
            'K' => {
                let start = self.row * self.cols;
                match nums.first().copied().unwrap_or(0) {
                    0 => self.clear(here, start + self.cols),
                    1 => self.clear(start, here + 1),
                    _ => self.clear(start, start + self.cols),
                }
            }
            _ => {} // styles, modes, cursor visibility
        }
    }

    fn apply(&mut self, chunk: &[u8]) {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
        let mut it = text.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            match c {
                '\x1b' => {
                    let start = i;
                    match it.next() {
                        Some((_, '[')) => {
                            let mut params = String::new();
                            let mut fin = None;
                            for (_, d) in it.by_ref() {
                                if ('@'..='~').contains(&d) {
                                    fin = Some(d);
                                    break;
                                }
                                params.push(d);
                            }
                            match fin {
                                Some(f) => self.csi(&params, f),
                                None => {
                                    // Cut by the chunk's end: finish it with the next chunk.
                                    self.pending = bytes[start..].to_vec();
                                    return;
                                }
                            }
                        }
                        Some((_, ']')) => {
                            let mut done = false;
                            while let Some((_, d)) = it.next() {
                                if d == '\x07'
                                    || (d == '\x1b' && it.peek().is_some_and(|x| x.1 == '\\'))
                                {
                                    it.next();
                                    done = true;
                                    break;
                                }
                            }
                            if !done {
                                self.pending = bytes[start..].to_vec();
                                return;
                            }
                        }
                        Some(_) => {}
                        None => {
                            self.pending = bytes[start..].to_vec();
                            return;
                        }
                    }
                }
                '\r' => self.col = 0,
                '\n' => self.row = (self.row + 1).min(self.rows - 1),
                '\x08' => self.col = self.col.saturating_sub(1),
                c if c.is_control() => {}
                c => {
                    if self.col < self.cols {
                        self.cells[self.row * self.cols + self.col] = c;
                    }
                    self.col += 1;
                }
            }
        }
        self.pending.extend_from_slice(&bytes[valid..]);
    }
}

/// The screen after each chunk of output, with when the chunk arrived.
#[derive(Default)]
struct Log {
    frames: Vec<(Instant, String)>,
    raw: Vec<u8>,
}

pub struct Pty {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<Log>>,
    /// The thread that reads the output; `wait` joins it so the last bytes are in the log.
    reader: Option<std::thread::JoinHandle<()>>,
    pub started: Instant,
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
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut screen = Screen::new(cols as usize, rows as usize);
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let t = Instant::now();
                screen.apply(&buf[..n]);
                let mut log = sink.lock().unwrap();
                log.raw.extend_from_slice(&buf[..n]);
                log.frames.push((t, screen.text()));
            }
        });
        Pty {
            stdin: child.stdin.take(),
            child,
            log,
            reader: Some(reader),
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
        self.log.lock().unwrap().raw.clone()
    }

    /// The screen now.
    pub fn screen(&self) -> String {
        let log = self.log.lock().unwrap();
        log.frames.last().map_or(String::new(), |f| f.1.clone())
    }

    /// A mark for `wait_for_any_after`: the number of screens seen so far.
    pub fn mark(&self) -> usize {
        self.log.lock().unwrap().frames.len()
    }

    /// Waits until a screen after `mark` shows one of `needles`; returns when it arrived.
    pub fn wait_for_any_after(
        &self,
        mark: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut checked = mark;
        loop {
            {
                let log = self.log.lock().unwrap();
                for (t, s) in log.frames.iter().skip(checked) {
                    if needles.iter().any(|n| s.contains(n)) {
                        return Some(*t);
                    }
                }
                checked = checked.max(log.frames.len());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn wait_for_after(&self, mark: usize, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait_for_any_after(mark, &[needle], timeout)
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait_for_any_after(0, &[needle], timeout)
    }

    /// The program's process id: `script`'s child, which `exec`s the program (None until then).
    pub fn program_pid(&self) -> Option<u32> {
        let parent = self.child.id().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces, so split after its `)`.
            let rest = &stat[stat.rfind(')')? + 2..];
            let ppid = rest.split(' ').nth(1)?;
            (ppid == parent).then(|| e.file_name().to_str()?.parse().ok())?
        })
    }

    /// Waits for the program to end (killing it after `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                // `script` has ended: its output pipe ends too, so this join is short, and
                // afterwards `raw` holds everything the program wrote before it exited.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
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
