//! The one keymap: (mode, keys, command, description). Input handling, the status-bar hints, the
//! `?` help popup and the key table of docs/explorer.md all read this table, so they cannot disagree.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// A group of bindings. The app reports which modes are active, most specific first; the first
/// mode with a binding for a key wins, so a view can give a key its own meaning (e.g. `h` in the
/// tree collapses, elsewhere it moves left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The help popup.
    Help,
    /// Typing a filter in the adapter list.
    Filter,
    /// Typing a repo id in the fetch popup.
    Fetch,
    /// The export panel (`x`): choosing its settings.
    Export,
    /// The export panel's output folder, being typed.
    ExportFolder,
    List,
    Tree,
    LayerMap,
    ExpertMap,
    Stats,
    /// The Health view: findings, rank advice, serving verdicts.
    Health,
    /// Keys shared by the views of one adapter.
    Adapter,
    Compare,
    /// The Run screen: a training run's timeline.
    Run,
    /// Moving a selection or cursor, in every list, table and map.
    Move,
    Global,
}

impl Mode {
    pub fn title(self) -> &'static str {
        match self {
            Mode::Help => "Help",
            Mode::Filter => "Filter (typing)",
            Mode::Fetch => "Fetch from the Hub (typing)",
            Mode::Export => "Export panel",
            Mode::ExportFolder => "Export panel: output folder (typing)",
            Mode::List => "Adapter list",
            Mode::Tree => "Tree",
            Mode::LayerMap => "Layer map",
            Mode::ExpertMap => "Expert map",
            Mode::Stats => "Stats",
            Mode::Health => "Health",
            Mode::Adapter => "Adapter views",
            Mode::Compare => "Compare",
            Mode::Run => "Run",
            Mode::Move => "Moving",
            Mode::Global => "Everywhere",
        }
    }

    /// Every mode, in the order of the key table of docs/explorer.md.
    pub const ALL: [Mode; 16] = [
        Mode::Global,
        Mode::Move,
        Mode::List,
        Mode::Filter,
        Mode::Fetch,
        Mode::Export,
        Mode::ExportFolder,
        Mode::Adapter,
        Mode::Tree,
        Mode::LayerMap,
        Mode::ExpertMap,
        Mode::Stats,
        Mode::Health,
        Mode::Compare,
        Mode::Run,
        Mode::Help,
    ];
}

/// What a key asks for. Keys only ever produce these; the app decides what they mean in context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    /// `q`: back one screen, quit from the list.
    Back,
    /// `Esc`: close the popup, clear the filter, cancel a computation, else go back.
    Escape,
    Help,
    Up,
    Down,
    Left,
    Right,
    Top,
    Bottom,
    PageUp,
    PageDown,
    Open,
    NextView,
    PrevView,
    View(usize),
    Filter,
    FilterKeep,
    FilterClear,
    FilterDelete,
    /// Any printable character while typing a filter (the character travels in the action).
    FilterChar,
    /// `F`: open the popup that fetches an adapter from the Hub by id.
    Fetch,
    /// Start the fetch typed in the popup.
    FetchStart,
    /// Close the fetch popup.
    FetchCancel,
    /// `H` on the list: the other source's list (local ↔ the Hub's adapters of a base model).
    Source,
    /// `F` in an adapter's views: fetch this Hub adapter, whose data is not here yet.
    FetchThis,
    Mark,
    Compare,
    SortNext,
    SortReverse,
    Expand,
    Collapse,
    ExpandAll,
    NextMetric,
    NextTarget,
    ExportPlot,
    /// `u`: fused gate_up deltas as gate and up deltas of their own, or fused again.
    SplitGateUp,
    /// `i` on the Stats view: the selected delta's intruder dimensions against the base.
    Intruders,
    /// `x` on the list or an adapter's views: open the export panel for this adapter.
    Export,
    /// Start the export set up in the panel.
    ExportStart,
}

/// A key as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Code(KeyCode),
    Ctrl(char),
    /// Any printable character (text input).
    AnyChar,
}

const fn ch(c: char) -> Key {
    Key::Code(KeyCode::Char(c))
}

const fn code(c: KeyCode) -> Key {
    Key::Code(c)
}

impl Key {
    pub fn label(self) -> String {
        match self {
            Key::Ctrl(c) => format!("Ctrl-{c}"),
            Key::AnyChar => "text".into(),
            Key::Code(c) => match c {
                KeyCode::Char(' ') => "Space".into(),
                KeyCode::Char(c) => c.to_string(),
                KeyCode::Enter => "Enter".into(),
                KeyCode::Esc => "Esc".into(),
                KeyCode::Tab => "Tab".into(),
                KeyCode::BackTab => "S-Tab".into(),
                KeyCode::Backspace => "Bksp".into(),
                KeyCode::Up => "↑".into(),
                KeyCode::Down => "↓".into(),
                KeyCode::Left => "←".into(),
                KeyCode::Right => "→".into(),
                KeyCode::Home => "Home".into(),
                KeyCode::End => "End".into(),
                KeyCode::PageUp => "PgUp".into(),
                KeyCode::PageDown => "PgDn".into(),
                other => format!("{other:?}"),
            },
        }
    }

    fn matches(self, ev: &KeyEvent) -> bool {
        let ctrl_alt = ev
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match self {
            Key::Ctrl(c) => {
                ev.modifiers.contains(KeyModifiers::CONTROL) && ev.code == KeyCode::Char(c)
            }
            Key::AnyChar => matches!(ev.code, KeyCode::Char(c) if !c.is_control()) && !ctrl_alt,
            // Shift is part of the character (`G`, `?`), so it is not compared.
            Key::Code(KeyCode::Char(c)) => ev.code == KeyCode::Char(c) && !ctrl_alt,
            Key::Code(k) => ev.code == k && !ctrl_alt,
        }
    }
}

/// One row of the keymap.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub mode: Mode,
    pub keys: &'static [Key],
    pub command: Command,
    pub desc: &'static str,
    /// A short label when the status bar shows this key (the keys that matter most here).
    pub hint: Option<&'static str>,
}

const fn bind(
    mode: Mode,
    keys: &'static [Key],
    command: Command,
    desc: &'static str,
    hint: Option<&'static str>,
) -> Binding {
    Binding {
        mode,
        keys,
        command,
        desc,
        hint,
    }
}

use Command as C;
use Mode as M;

/// The keymap. Order within a mode is the order of the help popup and the status bar.
#[rustfmt::skip]
pub const KEYMAP: &[Binding] = &[
    // Help popup.
    bind(M::Help, &[code(KeyCode::Esc), ch('q'), ch('?')], C::Escape, "close help", Some("close")),
    bind(M::Help, &[ch('j'), code(KeyCode::Down)], C::Down, "scroll down", None),
    bind(M::Help, &[ch('k'), code(KeyCode::Up)], C::Up, "scroll up", None),
    // Typing a filter.
    bind(M::Filter, &[code(KeyCode::Enter)], C::FilterKeep, "keep the filter", Some("keep")),
    bind(M::Filter, &[code(KeyCode::Esc)], C::FilterClear, "clear the filter", Some("clear")),
    bind(M::Filter, &[code(KeyCode::Backspace)], C::FilterDelete, "delete a character", None),
    bind(M::Filter, &[code(KeyCode::Up)], C::Up, "move up", None),
    bind(M::Filter, &[code(KeyCode::Down)], C::Down, "move down", None),
    bind(M::Filter, &[Key::AnyChar], C::FilterChar, "type to filter (id, pattern, targets, dtype)", None),
    // Typing a repo id to fetch (the text keys are shared with the filter's commands).
    bind(M::Fetch, &[code(KeyCode::Enter)], C::FetchStart, "fetch into the hub cache", Some("fetch")),
    bind(M::Fetch, &[code(KeyCode::Esc)], C::FetchCancel, "cancel", Some("cancel")),
    bind(M::Fetch, &[code(KeyCode::Backspace)], C::FilterDelete, "delete a character", None),
    bind(M::Fetch, &[Key::AnyChar], C::FilterChar, "type ORG/NAME[@REV]", None),
    // The export panel (`x`). Digits and `.` type the rank K or the energy F.
    bind(M::Export, &[code(KeyCode::Enter)], C::ExportStart, "export; once it is done, close", Some("export")),
    bind(M::Export, &[code(KeyCode::Esc)], C::Escape, "cancel the running export, else close", Some("close")),
    bind(M::Export, &[ch('j'), code(KeyCode::Down), code(KeyCode::Tab)], C::Down, "next setting", None),
    bind(M::Export, &[ch('k'), code(KeyCode::Up), code(KeyCode::BackTab)], C::Up, "previous setting", None),
    bind(M::Export, &[ch('h'), code(KeyCode::Left)], C::Left, "previous choice, or K/F down", Some("change")),
    bind(M::Export, &[ch('l'), code(KeyCode::Right), ch(' ')], C::Right, "next choice, or K/F up", None),
    bind(M::Export, &[ch('0'), ch('1'), ch('2'), ch('3'), ch('4'), ch('5'), ch('6'), ch('7'), ch('8'), ch('9'), ch('.')], C::FilterChar, "type K or F", None),
    bind(M::Export, &[code(KeyCode::Backspace)], C::FilterDelete, "delete a character of K or F", None),
    bind(M::ExportFolder, &[code(KeyCode::Enter)], C::ExportStart, "export", Some("export")),
    bind(M::ExportFolder, &[code(KeyCode::Esc)], C::Escape, "cancel the running export, else close", Some("close")),
    bind(M::ExportFolder, &[code(KeyCode::Up), code(KeyCode::BackTab)], C::Up, "previous setting", None),
    bind(M::ExportFolder, &[code(KeyCode::Down), code(KeyCode::Tab)], C::Down, "next setting", None),
    bind(M::ExportFolder, &[code(KeyCode::Backspace)], C::FilterDelete, "delete a character", None),
    bind(M::ExportFolder, &[Key::AnyChar], C::FilterChar, "type the folder to write", None),
    // Adapter list.
    bind(M::List, &[code(KeyCode::Enter)], C::Open, "open the adapter, or the run's timeline", Some("open")),
    bind(M::List, &[ch('l'), code(KeyCode::Right)], C::Expand, "show a run's checkpoints", None),
    bind(M::List, &[ch('h'), code(KeyCode::Left)], C::Collapse, "fold them into the run again", None),
    bind(M::List, &[ch('/')], C::Filter, "filter as you type", Some("filter")),
    bind(M::List, &[ch(' '), ch('m')], C::Mark, "mark for compare (two at most)", Some("mark")),
    bind(M::List, &[ch('c')], C::Compare, "compare the two marked", Some("compare")),
    bind(M::List, &[ch('F')], C::Fetch, "fetch an adapter from the Hub by id", None),
    bind(M::List, &[ch('H')], C::Source, "the Hub's adapters / back to the local ones", None),
    bind(M::List, &[ch('x')], C::Export, "export as a PEFT adapter an engine serves", None),
    bind(M::List, &[ch('s')], C::SortNext, "sort by the next column", Some("sort")),
    bind(M::List, &[ch('S')], C::SortReverse, "reverse the sort", None),
    bind(M::List, &[code(KeyCode::Esc)], C::Escape, "stop fetch/listing, else clear filter, marks", None),
    bind(M::List, &[ch('q')], C::Back, "quit", Some("quit")),
    // The tree.
    bind(M::Tree, &[code(KeyCode::Enter)], C::Open, "expand / collapse", Some("expand")),
    bind(M::Tree, &[ch('l'), code(KeyCode::Right)], C::Expand, "expand", None),
    bind(M::Tree, &[ch('h'), code(KeyCode::Left)], C::Collapse, "collapse / go to parent", None),
    bind(M::Tree, &[ch('e')], C::ExpandAll, "expand all / collapse all", Some("all")),
    // Layer map.
    bind(M::LayerMap, &[code(KeyCode::Enter)], C::Open, "experts of this cell", Some("experts")),
    bind(M::LayerMap, &[ch('m')], C::NextMetric, "next metric", Some("metric")),
    // Expert map.
    bind(M::ExpertMap, &[ch('t')], C::NextTarget, "next expert target", Some("target")),
    bind(M::ExpertMap, &[ch('m')], C::NextMetric, "next metric", Some("metric")),
    bind(M::ExpertMap, &[code(KeyCode::Enter)], C::Open, "this delta in Stats", None),
    // Stats table.
    bind(M::Stats, &[ch('s')], C::SortNext, "sort by the next column", Some("sort")),
    bind(M::Stats, &[ch('S')], C::SortReverse, "reverse the sort", None),
    bind(M::Stats, &[ch('i')], C::Intruders, "intruder dimensions of this delta (needs the base)", None),
    // Health.
    bind(M::Health, &[code(KeyCode::Enter)], C::Open, "this finding's cell on the layer or expert map", Some("jump")),
    // Every view of one adapter.
    bind(M::Adapter, &[code(KeyCode::Tab)], C::NextView, "next view", Some("view")),
    bind(M::Adapter, &[code(KeyCode::BackTab)], C::PrevView, "previous view", None),
    bind(M::Adapter, &[ch('1')], C::View(0), "Tree view", None),
    bind(M::Adapter, &[ch('2')], C::View(1), "Layer map view", None),
    bind(M::Adapter, &[ch('3')], C::View(2), "Expert map view", None),
    bind(M::Adapter, &[ch('4')], C::View(3), "Stats view", None),
    bind(M::Adapter, &[ch('5')], C::View(4), "Health view", None),
    bind(M::Adapter, &[ch('p')], C::ExportPlot, "export this view as PNG", None),
    bind(M::Adapter, &[ch('x')], C::Export, "export as a PEFT adapter an engine serves", None),
    bind(M::Adapter, &[ch('u')], C::SplitGateUp, "gate_up as separate gate and up deltas, or fused", None),
    bind(M::Adapter, &[ch('F')], C::FetchThis, "fetch this Hub adapter (statistics need it)", None),
    bind(M::Adapter, &[code(KeyCode::Esc)], C::Escape, "cancel a fetch or statistics, else back", None),
    bind(M::Adapter, &[ch('q')], C::Back, "back to the list", Some("back")),
    // Compare.
    bind(M::Compare, &[ch('m')], C::NextMetric, "next metric", Some("metric")),
    bind(M::Compare, &[ch('p')], C::ExportPlot, "export as PNG", None),
    bind(M::Compare, &[code(KeyCode::Esc)], C::Escape, "back (cancels a running compare)", None),
    bind(M::Compare, &[ch('q')], C::Back, "back to the list", Some("back")),
    // The Run screen.
    bind(M::Run, &[code(KeyCode::Enter)], C::Open, "open this step's checkpoint", Some("open")),
    bind(M::Run, &[ch('m')], C::NextMetric, "next metric", Some("metric")),
    bind(M::Run, &[ch('t')], C::NextTarget, "next target", Some("target")),
    bind(M::Run, &[code(KeyCode::Tab)], C::NextView, "the layer map / the expert map", None),
    bind(M::Run, &[ch(' ')], C::Mark, "mark this step for compare (two at most)", Some("mark")),
    bind(M::Run, &[ch('c')], C::Compare, "compare the two marked steps", None),
    bind(M::Run, &[ch('p')], C::ExportPlot, "export the map as PNG", None),
    bind(M::Run, &[code(KeyCode::Esc)], C::Escape, "cancel the timeline, else back", None),
    bind(M::Run, &[ch('q')], C::Back, "back to the list", Some("back")),
    // Moving.
    bind(M::Move, &[ch('j'), code(KeyCode::Down)], C::Down, "down", None),
    bind(M::Move, &[ch('k'), code(KeyCode::Up)], C::Up, "up", None),
    bind(M::Move, &[ch('h'), code(KeyCode::Left)], C::Left, "left", None),
    bind(M::Move, &[ch('l'), code(KeyCode::Right)], C::Right, "right", None),
    bind(M::Move, &[ch('g'), code(KeyCode::Home)], C::Top, "first", None),
    bind(M::Move, &[ch('G'), code(KeyCode::End)], C::Bottom, "last", None),
    bind(M::Move, &[code(KeyCode::PageUp)], C::PageUp, "page up", None),
    bind(M::Move, &[code(KeyCode::PageDown)], C::PageDown, "page down", None),
    // Everywhere.
    bind(M::Global, &[ch('?')], C::Help, "help", Some("help")),
    bind(M::Global, &[Key::Ctrl('c')], C::Quit, "quit", None),
];

/// The command a key press means in the active modes (most specific first). Only presses count:
/// terminals that report releases would otherwise act twice.
pub fn lookup(modes: &[Mode], ev: &KeyEvent) -> Option<Command> {
    if ev.kind != KeyEventKind::Press {
        return None;
    }
    // Ctrl-c quits from anywhere, even while typing a filter.
    if Key::Ctrl('c').matches(ev) {
        return Some(Command::Quit);
    }
    modes.iter().find_map(|m| {
        KEYMAP
            .iter()
            .filter(|b| b.mode == *m)
            .find(|b| b.keys.iter().any(|k| k.matches(ev)))
            .map(|b| b.command)
    })
}

/// `j/↓`.
pub fn keys_label(b: &Binding) -> String {
    b.keys
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join("/")
}

/// The bindings that apply in `modes`, grouped by mode, without keys a more specific mode took.
pub fn effective(modes: &[Mode]) -> Vec<(Mode, Vec<&'static Binding>)> {
    let mut taken: Vec<Key> = Vec::new();
    let mut out = Vec::new();
    for m in modes {
        let mut rows = Vec::new();
        for b in KEYMAP.iter().filter(|b| b.mode == *m) {
            let free: Vec<Key> = b
                .keys
                .iter()
                .copied()
                .filter(|k| !taken.contains(k))
                .collect();
            if free.is_empty() {
                continue;
            }
            rows.push(b);
        }
        for b in &rows {
            taken.extend(b.keys.iter().copied());
        }
        if !rows.is_empty() {
            out.push((*m, rows));
        }
    }
    out
}

/// The status bar's `key desc` pairs for `modes`.
pub fn hints(modes: &[Mode]) -> Vec<(String, &'static str)> {
    effective(modes)
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter_map(|b| b.hint.map(|h| (keys_label(b), h)))
        .collect()
}

/// The key table of docs/explorer.md (Markdown), generated so that it cannot drift from the keymap.
pub fn markdown_table() -> String {
    let mut out = String::from("| where | keys | does |\n|---|---|---|\n");
    for m in Mode::ALL {
        for b in KEYMAP.iter().filter(|b| b.mode == m) {
            let keys = keys_label(b).replace('|', "\\|");
            out.push_str(&format!("| {} | `{}` | {} |\n", m.title(), keys, b.desc));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn specific_modes_win_and_shadowed_keys_leave_the_help() {
        let tree = [Mode::Tree, Mode::Adapter, Mode::Move, Mode::Global];
        assert_eq!(
            lookup(&tree, &press(KeyCode::Char('h'))),
            Some(Command::Collapse)
        );
        let stats = [Mode::Stats, Mode::Adapter, Mode::Move, Mode::Global];
        assert_eq!(
            lookup(&stats, &press(KeyCode::Char('h'))),
            Some(Command::Left)
        );
        let help = effective(&tree);
        let moving = help.iter().find(|(m, _)| *m == Mode::Move).unwrap();
        assert!(moving.1.iter().all(|b| b.command != Command::Left));
    }

    #[test]
    fn typing_a_filter_takes_every_character_but_ctrl_c_still_quits() {
        let f = [Mode::Filter, Mode::Global];
        assert_eq!(
            lookup(&f, &press(KeyCode::Char('q'))),
            Some(Command::FilterChar)
        );
        assert_eq!(
            lookup(&f, &press(KeyCode::Char('?'))),
            Some(Command::FilterChar)
        );
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(&f, &ctrl_c), Some(Command::Quit));
    }

    #[test]
    fn releases_are_ignored() {
        let mut ev = press(KeyCode::Char('q'));
        ev.kind = KeyEventKind::Release;
        assert_eq!(lookup(&[Mode::List], &ev), None);
    }

    #[test]
    fn the_contract_keys_are_bound() {
        let list = [Mode::List, Mode::Move, Mode::Global];
        let l = |c| lookup(&list, &press(c));
        assert_eq!(l(KeyCode::Char('/')), Some(Command::Filter));
        assert_eq!(l(KeyCode::Enter), Some(Command::Open));
        assert_eq!(l(KeyCode::Char('?')), Some(Command::Help));
        assert_eq!(l(KeyCode::Char('q')), Some(Command::Back));
        assert_eq!(l(KeyCode::Esc), Some(Command::Escape));
        assert_eq!(l(KeyCode::Char('H')), Some(Command::Source));
        let adapter = [Mode::Tree, Mode::Adapter, Mode::Move, Mode::Global];
        assert_eq!(
            lookup(&adapter, &press(KeyCode::Tab)),
            Some(Command::NextView)
        );
        assert_eq!(
            lookup(&adapter, &press(KeyCode::Char('q'))),
            Some(Command::Back)
        );
        assert_eq!(
            lookup(&adapter, &press(KeyCode::Char('F'))),
            Some(Command::FetchThis)
        );
    }
}
