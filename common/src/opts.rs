//! The options every lesson shares: `--help`, `--pace F` (or the
//! `LESSON_PACE` environment variable) and the lesson's own options, each
//! numeric option with a range that `--help` shows.
//!
//! A bad option prints one line naming it and exits with status 2, before
//! the lesson starts anything.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A switch: present or not.
    Flag,
    /// A whole number in `min..=max`.
    Int { default: u64, min: u64, max: u64 },
    /// A decimal number in `min..=max`.
    Float { default: f64, min: f64, max: f64 },
}

/// One option: `--name VALUE`, or `--name=VALUE`.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub value: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

impl Opt {
    /// `--name N`, a whole number from `min` to `max`.
    pub const fn int(
        name: &'static str,
        help: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Opt {
        Opt {
            name,
            value: "N",
            help,
            kind: Kind::Int { default, min, max },
        }
    }

    /// `--name X`, a decimal number from `min` to `max`.
    pub const fn float(
        name: &'static str,
        help: &'static str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Opt {
        Opt {
            name,
            value: "X",
            help,
            kind: Kind::Float { default, min, max },
        }
    }

    /// `--name`, a switch.
    pub const fn flag(name: &'static str, help: &'static str) -> Opt {
        Opt {
            name,
            value: "",
            help,
            kind: Kind::Flag,
        }
    }
}

/// A lesson's command line: its name, a one-line summary, its options.
pub struct Spec {
    pub name: &'static str,
    pub about: &'static str,
    pub options: &'static [Opt],
}

const PACE: Opt = Opt::float(
    "pace",
    "scale the pauses meant for a human watching (0 = no pauses); env LESSON_PACE",
    1.0,
    0.0,
    100.0,
);

#[derive(Debug, Clone, Copy)]
enum Value {
    Flag(bool),
    Int(u64),
    Float(f64),
}

/// The pace factor: scales the sleeps and windows a lesson keeps for a
/// human to watch. What a lesson proves never rests on these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace(pub f64);

impl Pace {
    /// `d` scaled by the pace factor.
    pub fn scale(self, d: Duration) -> Duration {
        d.mul_f64(self.0)
    }

    /// `secs` seconds, scaled.
    pub fn secs(self, secs: f64) -> Duration {
        self.scale(Duration::from_secs_f64(secs))
    }

    /// Sleep for `secs` seconds, scaled.
    pub fn sleep(self, secs: f64) {
        std::thread::sleep(self.secs(secs));
    }
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    values: HashMap<&'static str, Value>,
}

/// Why parsing stopped: help was asked for, or an option was bad.
#[derive(Debug, PartialEq)]
pub enum Stop {
    Help(String),
    Bad(String),
}

fn describe_range(o: &Opt) -> String {
    match o.kind {
        Kind::Flag => String::new(),
        Kind::Int { default, min, max } => format!(" ({min}-{max}, default {default})"),
        Kind::Float { default, min, max } => format!(" ({min}-{max}, default {default})"),
    }
}

/// The `--help` text.
pub fn help(spec: &Spec) -> String {
    let mut h = format!(
        "{}: {}\n\nUsage: {} [OPTIONS]\n\nOptions:\n",
        spec.name, spec.about, spec.name
    );
    let all = spec.options.iter().chain(std::iter::once(&PACE));
    for o in all {
        let left = if o.value.is_empty() {
            format!("--{}", o.name)
        } else {
            format!("--{} {}", o.name, o.value)
        };
        let _ = writeln!(h, "  {left:<18} {}{}", o.help, describe_range(o));
    }
    let _ = writeln!(h, "  {:<18} print this help", "-h, --help");
    h
}

fn parse_value(o: &Opt, given: &str, shown_as: &str) -> Result<Value, String> {
    let bad = |what: String| Err(format!("{shown_as}: {what}, got {given:?} (see --help)"));
    match o.kind {
        Kind::Flag => Ok(Value::Flag(true)),
        Kind::Int { min, max, .. } => match given.trim().parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Value::Int(v)),
            _ => bad(format!("expected a whole number from {min} to {max}")),
        },
        Kind::Float { min, max, .. } => match given.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min && v <= max => Ok(Value::Float(v)),
            _ => bad(format!("expected a number from {min} to {max}")),
        },
    }
}

impl Args {
    /// Parse the process's arguments and `LESSON_PACE`. Prints help and
    /// exits 0 for `--help`; prints one line and exits 2 for a bad option.
    /// Also remembers this process as the lesson's main process (for names).
    pub fn parse(spec: &Spec) -> Args {
        crate::names::remember_lesson_pid();
        let pace = std::env::var("LESSON_PACE").ok();
        match Args::parse_from(spec, std::env::args().skip(1), pace.as_deref()) {
            Ok(a) => a,
            Err(Stop::Help(h)) => {
                print!("{h}");
                std::process::exit(0)
            }
            Err(Stop::Bad(msg)) => {
                eprintln!("{}: {msg}", spec.name);
                std::process::exit(2)
            }
        }
    }

    /// Parse `args` (without the program name) and the value of
    /// `LESSON_PACE`, if set. `--pace` wins over `LESSON_PACE`.
    pub fn parse_from(
        spec: &Spec,
        args: impl IntoIterator<Item = String>,
        env_pace: Option<&str>,
    ) -> Result<Args, Stop> {
        let mut values = HashMap::new();
        let all: Vec<&Opt> = spec.options.iter().chain(std::iter::once(&PACE)).collect();
        for o in &all {
            values.insert(
                o.name,
                match o.kind {
                    Kind::Flag => Value::Flag(false),
                    Kind::Int { default, .. } => Value::Int(default),
                    Kind::Float { default, .. } => Value::Float(default),
                },
            );
        }
        if let Some(p) = env_pace {
            values.insert(
                "pace",
                parse_value(&PACE, p, "LESSON_PACE").map_err(Stop::Bad)?,
            );
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Stop::Help(help(spec)));
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(Stop::Bad(format!(
                    "unexpected argument {arg:?} (see --help)"
                )));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(o) = all.iter().find(|o| o.name == name) else {
                return Err(Stop::Bad(format!("unknown option --{name} (see --help)")));
            };
            let shown = format!("--{}", o.name);
            let value = match (o.kind, inline) {
                (Kind::Flag, None) => Value::Flag(true),
                (Kind::Flag, Some(_)) => {
                    return Err(Stop::Bad(format!("{shown}: takes no value (see --help)")))
                }
                (_, Some(v)) => parse_value(o, &v, &shown).map_err(Stop::Bad)?,
                (_, None) => match args.next() {
                    Some(v) => parse_value(o, &v, &shown).map_err(Stop::Bad)?,
                    None => return Err(Stop::Bad(format!("{shown}: missing value (see --help)"))),
                },
            };
            values.insert(o.name, value);
        }
        Ok(Args { values })
    }

    fn get(&self, name: &str) -> Value {
        *self
            .values
            .get(name)
            .unwrap_or_else(|| panic!("option --{name} is not in the lesson's Spec"))
    }

    /// The value of a whole-number option.
    pub fn int(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Int(v) => v,
            _ => panic!("option --{name} is not a whole number"),
        }
    }

    /// The value of a whole-number option, as `usize`.
    pub fn usize(&self, name: &str) -> usize {
        self.int(name) as usize
    }

    /// The value of a decimal option.
    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Value::Float(v) => v,
            _ => panic!("option --{name} is not a number"),
        }
    }

    /// Whether a switch was given.
    pub fn flag(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Flag(v) => v,
            _ => panic!("option --{name} is not a switch"),
        }
    }

    /// The pace factor.
    pub fn pace(&self) -> Pace {
        Pace(self.float("pace"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        name: "demo",
        about: "Demonstrate options.",
        options: &[
            Opt::int("workers", "children to start", 3, 1, 64),
            Opt::flag("quick", "be quick"),
        ],
    };

    fn parse(args: &[&str], env: Option<&str>) -> Result<Args, Stop> {
        Args::parse_from(&SPEC, args.iter().map(|s| s.to_string()), env)
    }

    fn bad(args: &[&str], env: Option<&str>) -> String {
        match parse(args, env) {
            Err(Stop::Bad(m)) => m,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_values() {
        let a = parse(&[], None).unwrap();
        assert_eq!(
            (a.int("workers"), a.flag("quick"), a.pace()),
            (3, false, Pace(1.0))
        );
        let a = parse(&["--workers", "5", "--quick", "--pace=0.5"], None).unwrap();
        assert_eq!(
            (a.int("workers"), a.flag("quick"), a.pace()),
            (5, true, Pace(0.5))
        );
    }

    #[test]
    fn pace_from_env_and_flag_wins() {
        assert_eq!(parse(&[], Some("0")).unwrap().pace(), Pace(0.0));
        assert_eq!(
            parse(&["--pace", "2"], Some("0")).unwrap().pace(),
            Pace(2.0)
        );
        assert!(bad(&[], Some("fast")).starts_with("LESSON_PACE:"));
    }

    #[test]
    fn bad_values_name_the_option() {
        for args in [
            &["--workers", "abc"][..],
            &["--workers", "-1"],
            &["--workers", "0"],
            &["--workers", "1000"],
            &["--workers"],
        ] {
            let m = bad(args, None);
            assert!(m.starts_with("--workers:"), "{m}");
            assert!(!m.contains('\n'));
        }
        assert!(bad(&["--pace", "1e9"], None).starts_with("--pace:"));
        assert!(bad(&["--pace", "NaN"], None).starts_with("--pace:"));
        assert!(bad(&["--nope"], None).contains("--nope"));
        assert!(bad(&["stray"], None).contains("stray"));
        assert!(bad(&["--quick=yes"], None).starts_with("--quick:"));
    }

    #[test]
    fn help_shows_ranges() {
        let Err(Stop::Help(h)) = parse(&["--help"], None) else {
            panic!("no help")
        };
        assert!(
            h.contains("--workers N") && h.contains("(1-64, default 3)"),
            "{h}"
        );
        assert!(
            h.contains("--pace X") && h.contains("(0-100, default 1)"),
            "{h}"
        );
    }
}
