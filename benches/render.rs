//! Workbench responsiveness (a benchmark, not a test: it prints numbers and asserts nothing).
//!
//! 1. Rendering a 10 000-token session with both inspectors open and the cursor mid-reply, at
//!    80×24 and 160×48, for a DeepSeek-V2-Lite-shaped trace (26 MoE layers, 64 experts, top-6)
//!    and a DeepSeek-V3-shaped one (58 layers, 256 experts, top-8). Target: ≤ 5 ms per frame.
//! 2. Keypress-to-screen latency while a reply streams: the real binary in a pseudo-terminal
//!    with the stand-in model; each typed key is timed until a terminal emulator shows it. Once
//!    with the model loaded in the workbench, once with the same model behind `thinkbench serve`
//!    on loopback and the workbench on `--remote` (the reply then streams over HTTP).
//!
//! `cargo bench --bench render` (scripts/bench.sh runs it).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use thinkbench::app::{sample, Action, App};

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    format!(
        "mean {:.2} ms  p50 {:.2}  p95 {:.2}  max {:.2}  (n={n})",
        mean,
        v[n / 2],
        v[(n * 95 / 100).min(n - 1)],
        v[n - 1]
    )
}

fn render_bench(label: &str, app: &App, w: u16, h: u16, frames: usize) {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    for _ in 0..5 {
        t.draw(|f| thinkbench::ui::draw(f, app)).unwrap();
    }
    let times: Vec<f64> = (0..frames)
        .map(|_| {
            let s = Instant::now();
            t.draw(|f| thinkbench::ui::draw(f, app)).unwrap();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!("render {label:<38} {w:>3}x{h:<3} {}", stats(times));
}

fn inspecting(mut app: App, colour: bool) -> App {
    app.update(Action::FocusTranscript);
    app.update(Action::ToggleRouting);
    app.update(Action::ToggleTokens);
    if colour {
        app.update(Action::ToggleExpertColour);
    }
    let n = app.inspected().map_or(0, |(_, m)| m.tokens.len());
    app.update(Action::CursorStart);
    app.update(Action::Cursor(n as isize / 2));
    app
}

/// The model the latency bench chats with. The built-in model replies in a fraction of a second
/// (too fast to type into), so when `make bench` has built the R1-Distill-Qwen-1.5B-shaped
/// random-weight model, that one is used (bf16, with the built-in model's tokenizer): a reply then
/// takes many seconds with the engine keeping every core busy — the case where keys must still
/// reach the screen at once.
fn latency_model(scratch: &std::path::Path) -> (String, &'static str, String) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let builtin = format!("{repo}/{}", thinkbench::cli::demo::DEFAULT_MODEL);
    let big = directories::BaseDirs::new()
        .map(|d| {
            d.cache_dir()
                .join("thinkbench/bench-models/qwen2_1p5b_shape")
        })
        .filter(|d| d.join("config.json").exists());
    let Some(big) = big else {
        return (builtin, "f32", "the built-in model".into());
    };
    let dir = scratch.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&big).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().starts_with("tokenizer") {
            let _ = std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name()));
        }
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(format!("{builtin}/{f}"), dir.join(f)).unwrap();
    }
    (
        dir.display().to_string(),
        "bf16",
        "the 1.5B-shaped bench model, bf16".into(),
    )
}

/// The latency bench twice: the model in the workbench, then behind `thinkbench serve`.
fn latency_benches() {
    let dir = std::env::temp_dir().join(format!("thinkbench-bench-{}", std::process::id()));
    let (model, dtype, label) = latency_model(&dir);
    let local = ["--model", &model, "--dtype", dtype].map(String::from);
    latency_bench(&format!("{label}, in the workbench"), &local, &dir);
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_thinkbench"))
        .args(["serve", "--port", "0", "--model", &model, "--dtype", dtype])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start thinkbench serve");
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    );
    match line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
    {
        Some(base) => {
            let remote = ["--remote".to_string(), format!("{base}/v1")];
            latency_bench(
                &format!("{label}, behind thinkbench serve (--remote)"),
                &remote,
                &dir,
            );
        }
        None => eprintln!("latency bench: thinkbench serve did not start: {line}"),
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn latency_bench(label: &str, chat: &[String], dir: &std::path::Path) {
    println!("keypress-to-screen: chatting with {label}");
    let pty = portable_pty::native_pty_system()
        .openpty(portable_pty::PtySize {
            rows: 30,
            cols: 100,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("pty");
    let mut cmd = portable_pty::CommandBuilder::new(env!("CARGO_BIN_EXE_thinkbench"));
    cmd.args(chat);
    cmd.args([
        "--sessions-dir",
        dir.to_str().unwrap(),
        "--max-tokens",
        "240",
    ]);
    cmd.env("TERM", "xterm-256color");
    let mut child = pty.slave.spawn_command(cmd).expect("spawn");
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut writer = pty.master.take_writer().unwrap();
    let parser = Arc::new(Mutex::new(vt100::Parser::new(30, 100, 0)));
    let p = parser.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            p.lock().unwrap().process(&buf[..n]);
        }
    });
    let screen = || parser.lock().unwrap().screen().contents();
    let wait = |what: &str, cond: &dyn Fn(&str) -> bool| -> bool {
        let s = Instant::now();
        while s.elapsed() < Duration::from_secs(60) {
            if cond(&screen()) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        eprintln!("latency bench: gave up waiting for {what}");
        false
    };
    let mut send = |b: &[u8]| {
        writer.write_all(b).unwrap();
        writer.flush().unwrap();
    };
    let mut samples = Vec::new();
    if wait("the model", &|s| s.contains("ctx 0/")) {
        for round in 0..3 {
            send(b"Count slowly from one to fifty.\r");
            if !wait("generation", &|s| {
                s.contains("● thinking") || s.contains("● answering")
            }) {
                break;
            }
            for i in 1..=40usize {
                let generating = screen().contains("● ");
                if !generating {
                    break;
                }
                let typed = "k".repeat(i);
                let t = Instant::now();
                send(b"k");
                let seen = {
                    let s = Instant::now();
                    let mut ok = false;
                    while s.elapsed() < Duration::from_secs(5) {
                        if screen()
                            .lines()
                            .any(|l| l.starts_with(&format!("│{typed}")))
                        {
                            ok = true;
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    ok
                };
                if seen {
                    samples.push(t.elapsed().as_secs_f64() * 1e3);
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            // Clear the typed keys (Ctrl-U), stop the reply and go again.
            send(b"\x15\x1b");
            let _ = wait("the stop", &|s| !s.contains("● "));
            let _ = round;
        }
    }
    send(b"\x11");
    let _ = child.wait();
    if samples.is_empty() {
        println!("keypress-to-screen while generating: no samples (the reply finished too fast)");
    } else {
        println!("keypress-to-screen while generating: {}", stats(samples));
    }
}

fn main() {
    // `cargo bench` passes --bench; a name filter picks one part.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("render") {
        let lite = sample::long(10_000, 26, 64, 6);
        let v3 = sample::long(10_000, 58, 256, 8);
        let n = lite.inspected().map_or(0, |(_, m)| m.tokens.len());
        println!("session: {n} generated tokens in one reply");
        for (w, h) in [(80, 24), (160, 48)] {
            render_bench("chat, no inspector", &lite, w, h, 200);
            render_bench(
                "V2-Lite trace, both inspectors",
                &inspecting(lite.clone(), false),
                w,
                h,
                200,
            );
            render_bench(
                "V2-Lite, inspectors + expert colours",
                &inspecting(lite.clone(), true),
                w,
                h,
                200,
            );
            render_bench(
                "V3 trace (256 experts), inspectors",
                &inspecting(v3.clone(), false),
                w,
                h,
                200,
            );
        }
    }
    if want("latency") {
        latency_benches();
    }
}
