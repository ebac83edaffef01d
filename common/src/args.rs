//! What every lesson's command line shares, for clap: the pace factor
//! (`--pace X` or `LESSON_PACE`), and a parser for decimal options with a
//! range (clap's `value_parser!(u32).range(1..=64)` covers whole numbers).
//!
//! A lesson declares its own options in a `#[derive(clap::Parser)]` struct
//! and flattens [`Pace`] into it:
//!
//! ```
//! use clap::Parser;
//!
//! /// Demonstrate options.
//! #[derive(Parser)]
//! struct Args {
//!     /// Children to start (1-64)
//!     #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
//!           value_parser = clap::value_parser!(u32).range(1..=64))]
//!     workers: u32,
//!     /// Seconds to wait (0-600)
//!     #[arg(long, value_name = "X", default_value_t = 10.0, allow_negative_numbers = true,
//!           value_parser = common::args::number(0.0, 600.0))]
//!     window: f64,
//!     #[command(flatten)]
//!     pace: common::Pace,
//! }
//!
//! let a = Args::try_parse_from(["demo", "--workers", "5", "--pace", "0.5"]).unwrap();
//! assert_eq!((a.workers, a.window, a.pace.factor()), (5, 10.0, 0.5));
//! assert!(Args::try_parse_from(["demo", "--workers", "0"]).is_err());
//! assert!(Args::try_parse_from(["demo", "--pace", "NaN"]).is_err());
//! ```
//!
//! The conventions the tests read from `--help`: a whole-number option's
//! value is named `N`, a decimal one's `X`, and the help text ends with its
//! range, `(1-64)`. A bad value exits with status 2 and clap's message,
//! whose first line names the option.

use std::time::Duration;

/// A parser for a decimal option in `lo..=hi`: refuses NaN, infinities and
/// anything out of range, with a message that states the range.
pub fn number(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from {lo} to {hi}")),
    }
}

fn parse_pace(s: &str) -> Result<f64, String> {
    // Parsing the command line is the first thing every lesson does, in its
    // main process, before any fork: the moment to remember that process as
    // the one whose PID names this run's kernel objects (see `names`).
    crate::names::remember_lesson_pid();
    number(0.0, 100.0)(s).map_err(|_| "--pace or LESSON_PACE takes a number from 0 to 100".into())
}

/// The pace factor: scales the sleeps and windows a lesson keeps for a
/// human to watch (0 = no pauses). What a lesson proves never rests on these.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Scale the pauses meant for a human watching, 0 = none (0-100)
    #[arg(
        long = "pace",
        value_name = "X",
        env = "LESSON_PACE",
        default_value = "1",
        allow_negative_numbers = true,
        value_parser = parse_pace
    )]
    factor: f64,
}

impl Pace {
    /// A pace factor given in code (tests, or a lesson passing it on).
    pub fn new(factor: f64) -> Pace {
        Pace { factor }
    }

    /// The factor itself, for passing on to a child program (`--pace`).
    pub fn factor(self) -> f64 {
        self.factor
    }

    /// `d` scaled by the pace factor.
    pub fn scale(self, d: Duration) -> Duration {
        d.mul_f64(self.factor)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Demo {
        /// Children to start (1-64)
        #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=64))]
        workers: u32,
        #[command(flatten)]
        pace: Pace,
    }

    fn parse(args: &[&str]) -> Result<Demo, clap::Error> {
        Demo::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_values_and_refusals() {
        let d = parse(&[]).unwrap();
        // LESSON_PACE may be set around the test run: only check what is ours.
        assert_eq!(d.workers, 3);
        let d = parse(&["--workers", "5", "--pace=0.5"]).unwrap();
        assert_eq!((d.workers, d.pace), (5, Pace::new(0.5)));
        for bad in [
            &["--workers", "0"][..],
            &["--workers", "-5"],
            &["--workers", "1.5"],
            &["--workers", "65"],
            &["--pace", "NaN"],
            &["--pace", "inf"],
            &["--pace", "-1"],
            &["--pace", "101"],
            &["--nope"],
        ] {
            let e = parse(bad).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default();
            assert!(first.contains(bad[0]), "{bad:?}: {first}");
        }
        let e = parse(&["--pace", "soon"]).expect_err("refused");
        assert!(e.to_string().contains("LESSON_PACE"), "{e}");
    }

    #[test]
    fn scaling() {
        let p = Pace::new(0.5);
        assert_eq!(p.secs(2.0), Duration::from_secs(1));
        assert_eq!(Pace::new(0.0).secs(5.0), Duration::ZERO);
    }
}
