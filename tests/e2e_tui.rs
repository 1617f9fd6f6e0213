//! The real binary in a pseudo-terminal: it opens on a demo cache, Enter opens an adapter,
//! `q` goes back, `q` quits with status 0, and the terminal is restored (mouse capture too).

mod support;

use support::pty;

use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn opens_an_adapter_and_quits() {
    if !pty::available() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("demo-hub");
    lorascope::synth::demo::write_demo(&cache).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_lorascope"));
    let xdg = home.path().join("xdg");
    let mut p = pty::Pty::spawn(
        bin,
        &["tui", "--cache", cache.to_str().unwrap()],
        &[("HOME", home.path()), ("XDG_CACHE_HOME", &xdg)],
        120,
        36,
    );
    // The list (ids are cut in the middle, so look for their tails).
    assert!(
        p.wait_for("19 adapters", WAIT).is_some(),
        "no list on screen:\n{}",
        p.screen()
    );
    // The whole frame (up to the last row) has arrived.
    assert!(p.wait_for("i-moe-peft", WAIT).is_some(), "{}", p.screen());
    assert!(
        // The demo base's `BF16,U8` widens DTYPE: the ids are cut one character shorter.
        p.screen().contains("0b-attn-r8  attn-only"),
        "{}",
        p.screen()
    );
    let mark = p.mark();
    p.send(b"\r");
    assert!(
        p.wait_for_after(mark, "2 Layer map", WAIT).is_some(),
        "Enter did not open the adapter view:\n{}",
        p.screen()
    );
    assert!(
        p.wait_for_after(mark, "▾ layer 0", WAIT).is_some(),
        "{}",
        p.screen()
    );
    let screen = p.screen();
    assert!(
        screen.contains("lorascope › lorascope-demo/gpt-oss-20b-attn-r8")
            && screen.contains("▾ layer 0"),
        "{screen}"
    );
    let mark = p.mark();
    p.send(b"q");
    assert!(
        p.wait_for_after(mark, "19 adapters", WAIT).is_some(),
        "q did not go back to the list:\n{}",
        p.screen()
    );
    p.send(b"q");
    let status = p.wait(WAIT).expect("the explorer did not quit");
    assert!(status.success(), "exit status {status:?}:\n{}", p.screen());
    let raw = String::from_utf8_lossy(&p.raw()).into_owned();
    for (seq, what) in [
        ("\x1b[?1000h", "mouse capture on"),
        ("\x1b[?1000l", "mouse capture off"),
        ("\x1b[?1049l", "main screen back"),
    ] {
        assert!(raw.contains(seq), "no {what} ({seq:?}) in the output");
    }
    // The home folder was not written to (no demo cache of its own: --cache was given).
    assert!(!xdg.exists(), "the explorer wrote under XDG_CACHE_HOME");
}
