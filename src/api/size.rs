//! Sizes: Kubernetes quantities turned into exact integers (nano-CPUs, bytes) and bounded, and
//! what a server takes from its node once its profile fills in what it leaves out.
//!
//! The agent (Docker limits), the scheduler (placement), the node's `status.allocated` and the web
//! front (form errors) all use these functions, so they agree to the byte; the CEL rules on
//! [`Resources`](super::Resources) say the same at the API server. No float on the way: `0.25Gi`
//! is 268435456 bytes and `0.4n` is refused, never rounded to nothing.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::{ComputeProfile, ComputeServer, Resources};

/// A hundredth of a core: below that Docker's CPU quota means nothing useful.
pub const MIN_NANO_CPUS: i64 = 10_000_000;
/// No host has more cores than this.
pub const MAX_NANO_CPUS: i64 = 4096 * 1_000_000_000;
/// Docker refuses a memory limit below 6 MiB.
pub const MIN_MEMORY_BYTES: i64 = 6 << 20;
/// No host has more memory than this; sums of many servers still fit in 64 bits.
pub const MAX_MEMORY_BYTES: i64 = 64 << 40;

/// The bounds as quantities, for the CEL rules and messages.
pub const MIN_CPU: &str = "10m";
pub const MAX_CPU: &str = "4096";
pub const MIN_MEMORY: &str = "6Mi";
pub const MAX_MEMORY: &str = "64Ti";

/// Messages shared by the API server's rules, the web front's field errors and the agent.
pub const CPU_NOT_A_QUANTITY: &str = "cpu must be a quantity such as \"2\", \"1.5\" or \"500m\"";
pub const MEMORY_NOT_A_QUANTITY: &str = "memory must be a quantity such as \"512Mi\", \"1.5Gi\" or \"4Gi\"";
pub const CPU_TOO_SMALL: &str = "cpu must be at least 10m (a hundredth of a core)";
pub const CPU_TOO_BIG: &str = "cpu must be at most 4096 (cores)";
pub const MEMORY_TOO_SMALL: &str = "memory must be at least 6Mi (the smallest limit Docker accepts)";
pub const MEMORY_TOO_BIG: &str = "memory must be at most 64Ti";

/// Size used when neither the server nor its profile asks for one.
const FALLBACK_CPU: &str = "1";
const FALLBACK_MEMORY: &str = "512Mi";

/// Why a size cannot be used, in words for the person who asked for it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SizeError {
    #[error("{}; {value:?} is not one", not_a_quantity(.what))]
    NotAQuantity { what: Kind, value: String },
    #[error("{what} {value} has more digits than a size may have (at most {MAX_DIGITS} significant digits)")]
    TooPrecise { what: Kind, value: String },
    #[error("{}; this asks for {value}", too_small(.what))]
    TooSmall { what: Kind, value: String },
    #[error("{}; this asks for {value}", too_big(.what))]
    TooBig { what: Kind, value: String },
}

impl SizeError {
    /// The rule broken, without the value: the same words as the API server's message.
    pub fn rule(&self) -> String {
        match self {
            SizeError::NotAQuantity { what, .. } => not_a_quantity(what).into(),
            SizeError::TooSmall { what, .. } => too_small(what).into(),
            SizeError::TooBig { what, .. } => too_big(what).into(),
            other => other.to_string(),
        }
    }
}

/// Which amount a size is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cpu,
    Memory,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
        })
    }
}

fn not_a_quantity(what: &Kind) -> &'static str {
    match what {
        Kind::Cpu => CPU_NOT_A_QUANTITY,
        Kind::Memory => MEMORY_NOT_A_QUANTITY,
    }
}

fn too_small(what: &Kind) -> &'static str {
    match what {
        Kind::Cpu => CPU_TOO_SMALL,
        Kind::Memory => MEMORY_TOO_SMALL,
    }
}

fn too_big(what: &Kind) -> &'static str {
    match what {
        Kind::Cpu => CPU_TOO_BIG,
        Kind::Memory => MEMORY_TOO_BIG,
    }
}

/// More significant digits than this are refused: every exact product then fits in 128 bits.
const MAX_DIGITS: usize = 20;

/// Why a text is not an amount.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    Grammar,
    Digits,
    Overflow,
}

/// The exact value of a Kubernetes quantity in units of 10^-`decimals` (9: nano, 0: whole),
/// rounded up to a whole unit; negative values come back negative.
///
/// The grammar is Kubernetes' own: `<sign>?<digits>[.<digits>]` then nothing, a binary suffix
/// (Ki Mi Gi Ti Pi Ei), a decimal one (n u m k M G T P E), or an exponent (`e3`, `E-2`).
fn units(text: &str, decimals: i64) -> Result<i128, Unreadable> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(Unreadable::Grammar);
    }
    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => (exponent(suffix).ok_or(Unreadable::Grammar)?, 0),
    };
    // The digits as one integer with a decimal exponent, without leading or trailing zeros.
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok(0);
    }
    if trimmed.len() > MAX_DIGITS {
        return Err(Unreadable::Digits);
    }
    let mantissa: i128 = trimmed.parse().map_err(|_| Unreadable::Grammar)?;
    let exp10 = exp10 + decimals - fraction.len() as i64 + (significant.len() - trimmed.len()) as i64;
    // Below 10^20 times at most 2^60: fits in 127 bits.
    let scaled = mantissa << exp2;
    let value = if exp10 >= 0 {
        u32::try_from(exp10)
            .ok()
            .and_then(|e| 10i128.checked_pow(e))
            .and_then(|p| scaled.checked_mul(p))
            .ok_or(Unreadable::Overflow)?
    } else {
        match u32::try_from(-exp10).ok().and_then(|e| 10i128.checked_pow(e)) {
            Some(divisor) => scaled / divisor + i128::from(scaled % divisor != 0),
            // More than 10^38: the value is a sliver of one unit, which rounds up to one.
            None => 1,
        }
    };
    Ok(if negative { -value } else { value })
}

/// The exponent of a suffix such as `e3` or `E-2`.
fn exponent(suffix: &str) -> Option<i64> {
    let digits = suffix.strip_prefix(['e', 'E'])?;
    let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Exponents beyond a few hundred only overflow or vanish: clamp instead of failing to parse.
    let magnitude: i64 = unsigned.parse().unwrap_or(1000).min(1000);
    Some(if digits.starts_with('-') {
        -magnitude
    } else {
        magnitude
    })
}

fn exact(what: Kind, q: &Quantity, decimals: i64) -> Result<i64, SizeError> {
    let value = q.0.clone();
    match units(&q.0, decimals) {
        Ok(units) => i64::try_from(units).map_err(|_| SizeError::TooBig { what, value }),
        Err(Unreadable::Grammar) => Err(SizeError::NotAQuantity { what, value }),
        Err(Unreadable::Digits) => Err(SizeError::TooPrecise { what, value }),
        Err(Unreadable::Overflow) => Err(SizeError::TooBig { what, value }),
    }
}

fn bounded(what: Kind, q: &Quantity, decimals: i64, min: i64, max: i64) -> Result<i64, SizeError> {
    let value = exact(what, q, decimals)?;
    if value < min {
        Err(SizeError::TooSmall {
            what,
            value: q.0.clone(),
        })
    } else if value > max {
        Err(SizeError::TooBig {
            what,
            value: q.0.clone(),
        })
    } else {
        Ok(value)
    }
}

/// A server's CPU in nano-CPUs (Docker's `NanoCpus`), from 10m to 4096 cores.
pub fn nano_cpus(q: &Quantity) -> Result<i64, SizeError> {
    bounded(Kind::Cpu, q, 9, MIN_NANO_CPUS, MAX_NANO_CPUS)
}

/// A server's memory in bytes (Docker's `Memory`), from 6Mi to 64Ti.
pub fn memory_bytes(q: &Quantity) -> Result<i64, SizeError> {
    bounded(Kind::Memory, q, 0, MIN_MEMORY_BYTES, MAX_MEMORY_BYTES)
}

/// A node's CPU (capacity) in nano-CPUs: exact, zero allowed, no upper bound but 64 bits.
pub fn node_nano_cpus(q: &Quantity) -> Result<i64, SizeError> {
    bounded(Kind::Cpu, q, 9, 0, i64::MAX)
}

/// A node's memory (capacity) in bytes: exact, zero allowed.
pub fn node_memory_bytes(q: &Quantity) -> Result<i64, SizeError> {
    bounded(Kind::Memory, q, 0, 0, i64::MAX)
}

/// An allocation ratio ("4", "1.5", "0.75"), exactly, in thousandths: 0.5 to 64, at most three
/// decimals (the same rule as the CRD's). How much of a node's capacity may be promised.
pub fn ratio_milli(text: &str) -> Result<i64, super::Invalid> {
    let refuse = || {
        super::Invalid(format!(
            "\"{text}\" is not an allocation ratio: write a number from 0.5 to 64 with at most 3 decimals, such as 4 or 1.5"
        ))
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(fraction)) || fraction.len() > 3 || whole.len() > 2 {
        return Err(refuse());
    }
    let milli = whole.parse::<i64>().map_err(|_| refuse())? * 1000
        + format!("{fraction:0<3}").parse::<i64>().map_err(|_| refuse())?;
    match milli {
        500..=64_000 => Ok(milli),
        _ => Err(refuse()),
    }
}

/// `amount` times the ratio `milli` (thousandths), rounded down; never overflows.
pub fn scaled(amount: i64, milli: i64) -> i64 {
    i64::try_from(i128::from(amount) * i128::from(milli) / 1000).unwrap_or(i64::MAX)
}

/// Nano-CPUs as Kubernetes writes them: "2", "250m", "1500m", else nano.
pub fn cpu_quantity(nano: i64) -> Quantity {
    Quantity(if nano % 1_000_000_000 == 0 {
        (nano / 1_000_000_000).to_string()
    } else if nano % 1_000_000 == 0 {
        format!("{}m", nano / 1_000_000)
    } else {
        format!("{nano}n")
    })
}

/// Nano-CPUs as cores for a sentence: "4", "0.5", "1.25".
pub fn cores(nano: i64) -> String {
    let (whole, fraction) = (nano / 1_000_000_000, nano % 1_000_000_000);
    if fraction == 0 {
        return whole.to_string();
    }
    format!("{whole}.{:09}", fraction.abs())
        .trim_end_matches('0')
        .to_string()
}

/// Bytes as a quantity a person reads: "4Gi", "512Mi", "6Ki", else bytes.
pub fn memory_quantity(bytes: i64) -> Quantity {
    const UNITS: [(&str, u32); 4] = [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    for (suffix, shift) in UNITS {
        if bytes != 0 && bytes % (1 << shift) == 0 {
            return Quantity(format!("{}{suffix}", bytes >> shift));
        }
    }
    Quantity(bytes.to_string())
}

/// What a server takes from its node once its profile is applied: the scheduler places by it,
/// the agent sets the container's limits to it and reports the sum as `status.allocated`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub gpus: i64,
}

impl std::ops::AddAssign for Request {
    fn add_assign(&mut self, other: Request) {
        self.nano_cpus = self.nano_cpus.saturating_add(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.gpus = self.gpus.saturating_add(other.gpus);
    }
}

/// Why a server's size cannot be used; shown to the user in status.message.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum Refusal {
    #[error("profile {0:?} does not exist; ask an admin, or pick one from `kubectl get computeprofiles`")]
    NoProfile(String),
    #[error("{what} {asked} is more than profile {profile:?} allows ({max}); ask for less")]
    TooBig {
        what: &'static str,
        asked: String,
        max: String,
        profile: String,
    },
    #[error("{0}")]
    Size(#[from] SizeError),
}

/// The size of `server` with `profile` (the one its spec.profile names, if found) filling in
/// what the server leaves out, checked against the profile's maximum. GPUs need a profile that
/// allows them (`maxResources.gpus`); CPU and memory without a maximum are bounded by the node.
pub fn request(server: &ComputeServer, profile: Option<&ComputeProfile>) -> Result<Request, Refusal> {
    if let (Some(name), None) = (&server.spec.profile, profile) {
        return Err(Refusal::NoProfile(name.clone()));
    }
    let mine = &server.spec.resources;
    let defaults = profile
        .map(|p| p.spec.default_resources.clone())
        .unwrap_or_default();
    let pick = |mine: &Option<Quantity>, default: &Option<Quantity>, fallback: &str| {
        mine.clone()
            .or_else(|| default.clone())
            .unwrap_or_else(|| Quantity(fallback.into()))
    };
    let cpu = pick(&mine.cpu, &defaults.cpu, FALLBACK_CPU);
    let memory = pick(&mine.memory, &defaults.memory, FALLBACK_MEMORY);
    let request = Request {
        nano_cpus: nano_cpus(&cpu)?,
        memory_bytes: memory_bytes(&memory)?,
        gpus: mine.gpus.or(defaults.gpus).unwrap_or(0).into(),
    };
    if let Some(profile) = profile {
        check_max(profile, &cpu, &memory, &request)?;
    }
    Ok(request)
}

fn check_max(
    profile: &ComputeProfile,
    cpu: &Quantity,
    memory: &Quantity,
    asked: &Request,
) -> Result<(), Refusal> {
    let Resources {
        cpu: max_cpu,
        memory: max_memory,
        gpus: max_gpus,
    } = &profile.spec.max_resources;
    let too_big = |what, asked: String, max: String| Refusal::TooBig {
        what,
        asked,
        max,
        profile: profile.name_any(),
    };
    if let Some(max) = max_cpu
        && asked.nano_cpus > node_nano_cpus(max)?
    {
        return Err(too_big("cpu", cpu.0.clone(), max.0.clone()));
    }
    if let Some(max) = max_memory
        && asked.memory_bytes > node_memory_bytes(max)?
    {
        return Err(too_big("memory", memory.0.clone(), max.0.clone()));
    }
    let max_gpus = i64::from(max_gpus.unwrap_or(0));
    if asked.gpus > max_gpus {
        return Err(too_big("gpus", asked.gpus.to_string(), max_gpus.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity(text.into())
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(memory_bytes(&q("0.25Gi")), Ok(268_435_456));
        assert_eq!(memory_bytes(&q("0.5Gi")), Ok(536_870_912));
        assert_eq!(memory_bytes(&q("1.5Gi")), Ok(1_610_612_736));
        assert_eq!(memory_bytes(&q("1536Mi")), Ok(1_610_612_736));
        assert_eq!(memory_bytes(&q("2G")), Ok(2_000_000_000));
        assert_eq!(memory_bytes(&q("6Mi")), Ok(6 << 20));
        assert_eq!(memory_bytes(&q("64Ti")), Ok(64 << 40));
        assert_eq!(memory_bytes(&q("1e9")), Ok(1_000_000_000));
        assert_eq!(memory_bytes(&q("+7.5E6")), Ok(7_500_000));
        assert_eq!(nano_cpus(&q("0.5")), Ok(500_000_000));
        assert_eq!(nano_cpus(&q("1.5")), Ok(1_500_000_000));
        assert_eq!(nano_cpus(&q("250m")), Ok(250_000_000));
        assert_eq!(nano_cpus(&q(".25")), Ok(250_000_000));
        assert_eq!(nano_cpus(&q("2.")), Ok(2_000_000_000));
        assert_eq!(nano_cpus(&q("10m")), Ok(10_000_000));
        assert_eq!(nano_cpus(&q("0.010")), Ok(10_000_000));
        assert_eq!(nano_cpus(&q("15000000n")), Ok(15_000_000));
        assert_eq!(nano_cpus(&q("4096")), Ok(4_096_000_000_000));
        assert_eq!(nano_cpus(&q("2e-2")), Ok(20_000_000));
    }

    #[test]
    fn sizes_too_small_or_too_big_are_refused_with_the_rule() {
        let refused = |r: Result<i64, SizeError>| r.unwrap_err().rule();
        assert_eq!(refused(nano_cpus(&q("0.4n"))), CPU_TOO_SMALL);
        assert_eq!(refused(nano_cpus(&q("1m"))), CPU_TOO_SMALL);
        assert_eq!(refused(nano_cpus(&q("0"))), CPU_TOO_SMALL);
        assert_eq!(refused(nano_cpus(&q("-2"))), CPU_TOO_SMALL);
        assert_eq!(refused(nano_cpus(&q("4097"))), CPU_TOO_BIG);
        assert_eq!(refused(nano_cpus(&q("1e400"))), CPU_TOO_BIG);
        assert_eq!(refused(memory_bytes(&q("100"))), MEMORY_TOO_SMALL);
        assert_eq!(refused(memory_bytes(&q("0.25Ki"))), MEMORY_TOO_SMALL);
        assert_eq!(refused(memory_bytes(&q("8Ei"))), MEMORY_TOO_BIG);
        assert_eq!(refused(memory_bytes(&q("65Ti"))), MEMORY_TOO_BIG);
        assert_eq!(
            memory_bytes(&q("100")).unwrap_err().to_string(),
            format!("{MEMORY_TOO_SMALL}; this asks for 100")
        );
    }

    #[test]
    fn what_is_not_a_quantity_says_how_to_write_one() {
        for text in [
            "", "2 G", "1.5GB", "Gi", "1..5", "e3", "1e", "1e+", "0x10", "½", " 1", "1Gi ",
        ] {
            assert_eq!(
                memory_bytes(&q(text)).unwrap_err().rule(),
                MEMORY_NOT_A_QUANTITY,
                "{text:?}"
            );
        }
        assert!(matches!(
            nano_cpus(&q("1.0000000000000000000001")),
            Err(SizeError::TooPrecise { .. })
        ));
    }

    #[test]
    fn slivers_round_up_to_one_unit() {
        assert_eq!(node_memory_bytes(&q("0.1")), Ok(1));
        assert_eq!(node_memory_bytes(&q("1e-300")), Ok(1));
        assert_eq!(node_nano_cpus(&q("0.0000000001")), Ok(1));
        assert_eq!(node_memory_bytes(&q("1.0001Ki")), Ok(1025));
    }

    #[test]
    fn quantities_read_well() {
        assert_eq!(cpu_quantity(2_000_000_000).0, "2");
        assert_eq!(cpu_quantity(1_500_000_000).0, "1500m");
        assert_eq!(cores(1_500_000_000), "1.5");
        assert_eq!(cores(10_000_000), "0.01");
        assert_eq!(cores(4_000_000_000), "4");
        assert_eq!(cpu_quantity(250_000_000).0, "250m");
        assert_eq!(cpu_quantity(7).0, "7n");
        assert_eq!(memory_quantity(4 << 30).0, "4Gi");
        assert_eq!(memory_quantity(1536 << 20).0, "1536Mi");
        assert_eq!(memory_quantity(100).0, "100");
        assert_eq!(memory_quantity(0).0, "0");
        for nano in [1, 999, 10_000_000, 1_234_567_891] {
            assert_eq!(node_nano_cpus(&cpu_quantity(nano)), Ok(nano));
        }
    }

    fn server(yaml: &str) -> ComputeServer {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn profile(yaml: &str) -> ComputeProfile {
        serde_yaml::from_str(yaml).unwrap()
    }

    const SMALL: &str = "
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: small}
spec:
  image: computeserver/busybox:local
  defaultResources: {cpu: 250m, memory: 64Mi}
  maxResources: {cpu: '1', memory: 256Mi}
";

    #[test]
    fn the_profile_fills_in_and_bounds_the_request() {
        let s = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: small}}",
        );
        let p = profile(SMALL);
        assert_eq!(
            request(&s, Some(&p)),
            Ok(Request {
                nano_cpus: 250_000_000,
                memory_bytes: 64 << 20,
                gpus: 0
            })
        );
        let big = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: small, resources: {memory: 0.5Gi}}}",
        );
        assert_eq!(
            request(&big, Some(&p)).unwrap_err().to_string(),
            "memory 0.5Gi is more than profile \"small\" allows (256Mi); ask for less"
        );
        let gpu = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: small, resources: {gpus: 1}}}",
        );
        assert_eq!(
            request(&gpu, Some(&p)).unwrap_err().to_string(),
            "gpus 1 is more than profile \"small\" allows (0); ask for less"
        );
        let tiny = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: small, resources: {cpu: 0.4n}}}",
        );
        assert_eq!(
            request(&tiny, Some(&p)).unwrap_err().to_string(),
            format!("{CPU_TOO_SMALL}; this asks for 0.4n")
        );
        assert_eq!(request(&s, None), Err(Refusal::NoProfile("small".into())));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A quantity in Kubernetes' grammar with its exact value as a fraction
        /// `numerator / denominator` of the suffix's unit (computed from the parts, not the text).
        fn quantity() -> impl Strategy<Value = (String, u128, u128, u32, i64)> {
            let suffixes = prop_oneof![
                Just(("", 0u32, 0i64)),
                Just(("m", 0, -3)),
                Just(("n", 0, -9)),
                Just(("k", 0, 3)),
                Just(("M", 0, 6)),
                Just(("G", 0, 9)),
                Just(("Ki", 10, 0)),
                Just(("Mi", 20, 0)),
                Just(("Gi", 30, 0)),
                Just(("Ti", 40, 0)),
                Just(("e2", 0, 2)),
                Just(("e-3", 0, -3)),
            ];
            (0u64..100_000, proptest::option::of(0u32..1000), suffixes).prop_map(
                |(whole, fraction, (suffix, exp2, exp10))| {
                    let (text, numerator, denominator) = match fraction {
                        Some(f) => (
                            format!("{whole}.{f:03}{suffix}"),
                            u128::from(whole) * 1000 + u128::from(f),
                            1000,
                        ),
                        None => (format!("{whole}{suffix}"), u128::from(whole), 1),
                    };
                    (text, numerator, denominator, exp2, exp10)
                },
            )
        }

        /// ceil(numerator / denominator × 2^exp2 × 10^(exp10 + decimals)).
        fn expected(numerator: u128, denominator: u128, exp2: u32, exp10: i64) -> u128 {
            let (mut n, mut d) = (numerator << exp2, denominator);
            if exp10 >= 0 {
                n *= 10u128.pow(exp10 as u32);
            } else {
                d *= 10u128.pow((-exp10) as u32);
            }
            n.div_ceil(d)
        }

        proptest! {
            /// What the API accepts (a quantity within the bounds), the agent turns into a limit
            /// above zero that equals the quantity's exact value (rounded up to a whole unit).
            #[test]
            fn accepted_sizes_are_exact_limits_above_zero((text, n, d, exp2, exp10) in quantity()) {
                let memory = expected(n, d, exp2, exp10);
                match memory_bytes(&Quantity(text.clone())) {
                    Ok(bytes) => {
                        prop_assert!(bytes > 0);
                        prop_assert_eq!(bytes as u128, memory);
                    }
                    Err(SizeError::TooSmall { .. }) => prop_assert!(memory < MIN_MEMORY_BYTES as u128),
                    Err(SizeError::TooBig { .. }) => prop_assert!(memory > MAX_MEMORY_BYTES as u128),
                    Err(other) => prop_assert!(false, "{text}: {other}"),
                }
                if exp2 == 0 {
                    let nano = expected(n, d, 0, exp10 + 9);
                    match nano_cpus(&Quantity(text.clone())) {
                        Ok(value) => {
                            prop_assert!(value > 0);
                            prop_assert_eq!(value as u128, nano);
                        }
                        Err(SizeError::TooSmall { .. }) => prop_assert!(nano < MIN_NANO_CPUS as u128),
                        Err(SizeError::TooBig { .. }) => prop_assert!(nano > MAX_NANO_CPUS as u128),
                        Err(other) => prop_assert!(false, "{text}: {other}"),
                    }
                }
            }

            /// Any text at all: an answer, never a panic, and never a limit of zero.
            #[test]
            fn any_text_is_a_limit_or_a_refusal(text in "\\PC{0,24}") {
                if let Ok(bytes) = memory_bytes(&Quantity(text.clone())) {
                    prop_assert!(bytes >= MIN_MEMORY_BYTES);
                }
                if let Ok(nano) = nano_cpus(&Quantity(text)) {
                    prop_assert!(nano >= MIN_NANO_CPUS);
                }
            }

            /// A size a person reads back is the same size.
            #[test]
            fn formatted_sizes_read_back(nano in 0i64..i64::MAX / 2, bytes in 0i64..i64::MAX / 2) {
                prop_assert_eq!(node_nano_cpus(&cpu_quantity(nano)), Ok(nano));
                prop_assert_eq!(node_memory_bytes(&memory_quantity(bytes)), Ok(bytes));
            }
        }
    }

    #[test]
    fn allocation_ratios_are_exact_and_bounded() {
        assert_eq!(ratio_milli("4"), Ok(4000));
        assert_eq!(ratio_milli("1.5"), Ok(1500));
        assert_eq!(ratio_milli("0.75"), Ok(750));
        assert_eq!(ratio_milli("64"), Ok(64_000));
        for bad in ["0.4", "65", "1.2345", "", ".5", "5.", "-1", "1e3", "four", "100"] {
            let error = ratio_milli(bad).unwrap_err().to_string();
            assert!(error.contains("from 0.5 to 64"), "{bad}: {error}");
        }
        assert_eq!(scaled(2_000_000_000, 4000), 8_000_000_000);
        assert_eq!(scaled(i64::MAX, 64_000), i64::MAX);
    }
}
