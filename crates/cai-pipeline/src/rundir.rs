//! What cai owns in a run directory, and one run at a time in it.
//!
//! A run directory is cai's only when cai made it: it writes a marker file, [`MARKER_FILE`],
//! when it creates the folder or adopts an empty one, and refuses any other non-empty folder
//! (naming what it found) instead of clearing it. A run directory from before the marker is
//! adopted when everything in it is what `cai pipeline` wrote: its `run.json` record, the
//! report, and stage folders that each hold a cai manifest.
//!
//! Inside a stage folder cai deletes only the names the stage's manifest lists as written
//! ([`owns`]: each name with the sidecars kept beside it), so a file a user puts there stays.
//! [`RunDir::claim`] also takes the directory's exclusive [`WriterLock`] for the whole run, so
//! a second `cai pipeline` on it fails at once, naming the first one's PID.

use std::path::{Path, PathBuf};

use cai_core::lock::WriterLock;
use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::recipe::STAGES;
use crate::runner::{write_atomic, RunError};

/// The marker file of a run directory made (or adopted) by cai.
pub const MARKER_FILE: &str = ".cai-run";

/// The value of the marker's `"cai"` field, so that a stray file of the same name is not
/// taken for one.
const MARKER_TAG: &str = "cai pipeline run directory";

/// The files `cai pipeline` writes at the top of a run directory.
pub const RUN_TOP_FILES: [&str; 4] = ["recipe.toml", "run.json", "report.html", "report.md"];
/// The report's folder of figures at the top of a run directory.
pub const FIGURES_DIR: &str = "figures";
/// The size folders of a `--sizes` run directory and the large model's folder.
pub const SIZES_ENTRIES: [&str; 4] = ["small", "base", "large", "large-model"];

/// Which kind of run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// One recipe's stages (`cai pipeline`).
    Run,
    /// One run directory per lab model size and the scaling report (`cai pipeline --sizes`).
    Sizes,
}

impl RunKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Run => "a cai pipeline run directory",
            Self::Sizes => "a cai pipeline --sizes directory",
        }
    }
}

/// How a run directory came to be cai's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Made now.
    Created,
    /// An empty folder, adopted now.
    AdoptedEmpty,
    /// A run directory of a cai from before the marker, adopted now.
    AdoptedLegacy,
    /// Already marked.
    Marked,
}

/// The marker's contents.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    cai: String,
    kind: RunKind,
    version: String,
    created_at: u64,
    how: String,
}

/// A run directory this process owns for the duration of a run: locked, and marked as cai's.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    claimed: Claimed,
    _lock: WriterLock,
}

impl RunDir {
    /// Lock `path` for this run (failing at once, naming the holder's PID, when another run
    /// holds it) and make sure it is cai's: create it with its marker when missing, adopt an
    /// empty folder or a run directory from before the marker, refuse anything else.
    pub fn claim(path: &Path, kind: RunKind) -> Result<Self, RunError> {
        let lock = WriterLock::acquire(path)?;
        let claimed = claim_unlocked(path, kind)?;
        Ok(Self {
            path: path.to_owned(),
            claimed,
            _lock: lock,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it became cai's.
    pub fn claimed(&self) -> Claimed {
        self.claimed
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

fn claim_unlocked(path: &Path, kind: RunKind) -> Result<Claimed, RunError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path)(e)),
    };
    let Some(meta) = meta else {
        std::fs::create_dir_all(path).map_err(io(path))?;
        write_marker(path, kind, "created")?;
        return Ok(Claimed::Created);
    };
    // A link to a folder is followed (the user chose where the run goes).
    if !(meta.is_dir() || (meta.file_type().is_symlink() && path.is_dir())) {
        return Err(RunError::WrongKind {
            path: path.to_owned(),
            message: "expected a folder for the run directory, found a file".into(),
        });
    }
    if let Some(marked) = read_marker(path)? {
        if marked != kind {
            return Err(RunError::WrongKind {
                path: path.to_owned(),
                message: format!(
                    "this is {}, expected {}; choose another folder",
                    marked.describe(),
                    kind.describe()
                ),
            });
        }
        return Ok(Claimed::Marked);
    }
    let names = entry_names(path)?;
    if names.is_empty() {
        write_marker(path, kind, "adopted an empty folder")?;
        return Ok(Claimed::AdoptedEmpty);
    }
    match legacy_problem(path, kind, &names)? {
        None => {
            write_marker(path, kind, "adopted a run directory of an earlier cai")?;
            Ok(Claimed::AdoptedLegacy)
        }
        Some(why) => Err(RunError::NotARunDir {
            path: path.to_owned(),
            found: format!("{} ({why})", shown_names(path, &names)),
        }),
    }
}

/// The kind of run directory `path` is marked as, if it holds a cai marker.
pub fn read_marker(path: &Path) -> Result<Option<RunKind>, RunError> {
    let file = path.join(MARKER_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&file)(e)),
    };
    match serde_json::from_str::<Marker>(&text) {
        Ok(marker) if marker.cai == MARKER_TAG => Ok(Some(marker.kind)),
        _ => Ok(None),
    }
}

fn write_marker(path: &Path, kind: RunKind, how: &str) -> Result<(), RunError> {
    let marker = Marker {
        cai: MARKER_TAG.into(),
        kind,
        version: env!("CARGO_PKG_VERSION").into(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        how: how.into(),
    };
    let text = serde_json::to_string_pretty(&marker).expect("a marker serialises") + "\n";
    write_atomic(&path.join(MARKER_FILE), text.as_bytes())
}

/// The names in a folder, sorted.
fn entry_names(path: &Path) -> Result<Vec<String>, RunError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io(path))? {
        let entry = entry.map_err(io(path))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// "data/, notes.txt and 3 more": the first few names, folders with a slash.
fn shown_names(path: &Path, names: &[String]) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(5)
        .map(|n| {
            if path.join(n).is_dir() {
                format!("{n}/")
            } else {
                n.clone()
            }
        })
        .collect();
    match names.len().saturating_sub(5) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// Why a folder without the marker is not a run directory of an earlier cai (`None`: it is,
/// and may be adopted). An earlier `cai pipeline` wrote `run.json` naming the recipe and its
/// stages, the recipe's copy, the report and its figures, and one folder per stage, each with
/// a manifest written before anything else of the stage; a `--sizes` directory held a run
/// directory per size, the large model's folder and the scaling report.
fn legacy_problem(
    path: &Path,
    kind: RunKind,
    names: &[String],
) -> Result<Option<String>, RunError> {
    let tmp_of =
        |name: &str, allowed: &dyn Fn(&str) -> bool| name.strip_suffix(".tmp").is_some_and(allowed);
    match kind {
        RunKind::Run => {
            let is_cai = |n: &str| {
                RUN_TOP_FILES.contains(&n)
                    || n == FIGURES_DIR
                    || STAGES.iter().any(|s| s.name() == n)
            };
            if let Some(other) = names.iter().find(|n| !is_cai(n) && !tmp_of(n, &is_cai)) {
                return Ok(Some(format!("cai pipeline does not write {other}")));
            }
            let record = path.join("run.json");
            let is_record = std::fs::read_to_string(&record)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v.get("recipe").is_some() && v.get("stages").is_some());
            if !is_record {
                return Ok(Some("no run.json record of a cai pipeline run".into()));
            }
            for stage in STAGES {
                let dir = path.join(stage.name());
                if dir.exists() && !(dir.is_dir() && matches!(Manifest::read(&dir), Ok(Some(_)))) {
                    return Ok(Some(format!(
                        "{}/ has no cai {MANIFEST_FILE}",
                        stage.name()
                    )));
                }
            }
            Ok(None)
        }
        RunKind::Sizes => {
            // A size's run directory made first on its own (`--run-dir DIR/base`) leaves its
            // lock file here when that run was killed.
            let is_cai = |n: &str| {
                SIZES_ENTRIES.contains(&n)
                    || n == FIGURES_DIR
                    || n == "report.html"
                    || n == "report.md"
                    || n.strip_prefix('.')
                        .and_then(|n| n.strip_suffix(".cai-lock"))
                        .is_some_and(|n| SIZES_ENTRIES.contains(&n))
            };
            if let Some(other) = names.iter().find(|n| !is_cai(n) && !tmp_of(n, &is_cai)) {
                return Ok(Some(format!("cai pipeline --sizes does not write {other}")));
            }
            for size in ["small", "base", "large"] {
                let dir = path.join(size);
                if !dir.exists() || read_marker(&dir)? == Some(RunKind::Run) {
                    continue;
                }
                let names = if dir.is_dir() {
                    entry_names(&dir)?
                } else {
                    Vec::new()
                };
                if !dir.is_dir() || legacy_problem(&dir, RunKind::Run, &names)?.is_some() {
                    return Ok(Some(format!("{size}/ is not a cai pipeline run directory")));
                }
            }
            Ok(None)
        }
    }
}

/// Whether a run holds the run directory `path` now, without taking its lock: `None` when
/// none does, else the holder's PID as its lock file names it (`Some(None)`: unreadable).
/// Used by `cai pipeline status`, which only reads.
pub fn lock_holder(path: &Path) -> Result<Option<Option<u32>>, RunError> {
    use std::fs::TryLockError;
    use std::io::Read;
    let lock = cai_core::lock::lock_path(path)?;
    let mut file = match std::fs::File::open(&lock) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&lock)(e)),
    };
    // A shared lock is granted unless a writer holds the exclusive one; it is let go at once.
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(None)
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Ok(Some(text.trim().parse().ok()))
        }
        Err(TryLockError::Error(e)) => Err(io(&lock)(e)),
    }
}

/// Whether the entry `name` directly in a stage folder belongs to `write`, a name the stage
/// writes there: the name itself, the settings a resumable output keeps beside it
/// (`sl.jsonl` → `sl.config.json`), and the names cai gives the temporary files and locks of
/// either (`.sl.jsonl.tmp.PID`, `sl.jsonl.tmp`, `.sl.jsonl.cai-lock`, `….partial`). Nothing
/// else: a file that merely shares the stem (`sl.notes.txt`) is the user's.
pub fn owns(write: &str, name: &str) -> bool {
    if write.is_empty() {
        return false;
    }
    let settings = Path::new(write)
        .with_extension("config.json")
        .to_string_lossy()
        .into_owned();
    let base = name.strip_prefix('.').unwrap_or(name);
    let derived = |own: &str| {
        base.strip_prefix(own).is_some_and(|rest| {
            rest.is_empty()
                || rest == ".cai-lock"
                || rest == ".partial"
                || rest == ".tmp"
                || rest.starts_with(".tmp.")
        })
    };
    derived(write) || derived(&settings)
}

/// The writer locks cai leaves beside outputs; held ones belong to a running command, stale
/// ones block nothing, so they are never deleted here.
fn is_lock_file(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".cai-lock")
}

/// Delete from `stage_dir` what the stage wrote — the entries [`owns`] gives to `writes` —
/// and nothing else. Returns the names deleted. A stage folder that is a link is refused
/// (cai made its stage folders as folders).
pub fn clear_stage(stage_dir: &Path, writes: &[String]) -> Result<Vec<String>, RunError> {
    let meta = match std::fs::symlink_metadata(stage_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(stage_dir)(e)),
    };
    if !meta.is_dir() {
        return Err(RunError::WrongKind {
            path: stage_dir.to_owned(),
            message: "expected the stage's folder made by cai, found a file or a link; move it \
                      out of the run directory"
                .into(),
        });
    }
    let mut removed = Vec::new();
    let mut names = entry_names(stage_dir)?;
    // The manifest goes last: a run killed half-way through still has the list of what the
    // stage wrote, and the next run deletes the rest.
    names.sort_by_key(|n| n == MANIFEST_FILE);
    for name in names {
        if is_lock_file(&name) || !writes.iter().any(|w| owns(w, &name)) {
            continue;
        }
        let path = stage_dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        removed.push(name);
    }
    Ok(removed)
}

/// The first of `planned` (names the stage is about to write) that exists in `stage_dir`
/// without belonging to `owned` (what its manifest says cai wrote): something cai would
/// otherwise overwrite or resume from without having written it.
pub fn first_foreign(stage_dir: &Path, planned: &[String], owned: &[String]) -> Option<PathBuf> {
    planned
        .iter()
        .filter(|p| !owned.iter().any(|o| owns(o, p)))
        .map(|p| stage_dir.join(p))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "x").unwrap();
    }

    #[test]
    fn a_new_or_empty_folder_is_marked_and_a_marked_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/run");
        let run = RunDir::claim(&new, RunKind::Run).unwrap();
        assert_eq!(run.claimed(), Claimed::Created);
        assert_eq!(read_marker(&new).unwrap(), Some(RunKind::Run));
        drop(run);
        let again = RunDir::claim(&new, RunKind::Run).unwrap();
        assert_eq!(again.claimed(), Claimed::Marked);
        drop(again);
        let err = RunDir::claim(&new, RunKind::Sizes).unwrap_err().to_string();
        assert!(
            err.contains("run directory") && err.contains("--sizes"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let run = RunDir::claim(&empty, RunKind::Sizes).unwrap();
        assert_eq!(run.claimed(), Claimed::AdoptedEmpty);
    }

    #[test]
    fn a_foreign_folder_is_refused_untouched_naming_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        for f in ["data/a.jsonl", "critique/b", "sft/c", "notes.txt"] {
            touch(&mine.join(f));
        }
        let err = RunDir::claim(&mine, RunKind::Run).unwrap_err().to_string();
        for part in ["mine", "not empty", "critique/", "notes.txt", "--run-dir"] {
            assert!(err.contains(part), "{part}: {err}");
        }
        assert!(!mine.join(MARKER_FILE).exists());
        assert!(mine.join("data/a.jsonl").is_file());
        // A stray file named like the marker is not one.
        std::fs::write(mine.join(MARKER_FILE), "{}").unwrap();
        assert!(RunDir::claim(&mine, RunKind::Run).is_err());
    }

    #[test]
    fn a_run_directory_of_an_earlier_cai_is_adopted_only_when_all_of_it_is_cais() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::create_dir_all(old.join("data")).unwrap();
        std::fs::write(
            old.join("run.json"),
            r#"{"recipe": "lab", "stages": ["data"]}"#,
        )
        .unwrap();
        touch(&old.join("report.html"));
        touch(&old.join("figures/x.svg"));
        // A stage folder without a manifest: not provably cai's.
        let err = RunDir::claim(&old, RunKind::Run).unwrap_err().to_string();
        assert!(err.contains("data/ has no cai manifest.json"), "{err}");
        let manifest = crate::manifest::Manifest {
            stage: "data".into(),
            status: crate::manifest::Status::Finished,
            fingerprint: "f".into(),
            inputs: vec![],
            outputs: vec![],
            writes: vec![],
            commands: vec![],
            jobs: vec![],
            attempts: 1,
            seconds: 0.0,
            peak_rss_mib: None,
            started_at: 0,
            finished_at: None,
            error: None,
        };
        manifest.write(&old.join("data")).unwrap();
        touch(&old.join("data/notes.txt"));
        let run = RunDir::claim(&old, RunKind::Run).unwrap();
        assert_eq!(run.claimed(), Claimed::AdoptedLegacy);
        drop(run);
        // With a file an earlier cai never wrote at the top, it is refused.
        std::fs::remove_file(old.join(MARKER_FILE)).unwrap();
        touch(&old.join("mine.txt"));
        let err = RunDir::claim(&old, RunKind::Run).unwrap_err().to_string();
        assert!(err.contains("does not write mine.txt"), "{err}");
        // A --sizes directory holding it is not adopted either; without mine.txt it is.
        let sizes = dir.path().join("sizes");
        std::fs::create_dir(&sizes).unwrap();
        std::fs::rename(&old, sizes.join("small")).unwrap();
        assert!(RunDir::claim(&sizes, RunKind::Sizes).is_err());
        std::fs::remove_file(sizes.join("small/mine.txt")).unwrap();
        touch(&sizes.join("report.md"));
        // `--run-dir DIR/base` run first (and killed: its lock file stays), then `--sizes`.
        RunDir::claim(&sizes.join("base"), RunKind::Run).unwrap();
        touch(&sizes.join(".base.cai-lock"));
        assert_eq!(
            RunDir::claim(&sizes, RunKind::Sizes).unwrap().claimed(),
            Claimed::AdoptedLegacy
        );
    }

    #[test]
    fn a_second_claim_fails_at_once_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let held = RunDir::claim(&run, RunKind::Run).unwrap();
        let err = RunDir::claim(&run, RunKind::Run).unwrap_err().to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        assert_eq!(lock_holder(&run).unwrap(), Some(Some(std::process::id())));
        drop(held);
        assert_eq!(lock_holder(&run).unwrap(), None);
        RunDir::claim(&run, RunKind::Run).unwrap();
    }

    #[test]
    fn a_written_name_owns_its_sidecars_and_nothing_else() {
        for name in [
            "sl.jsonl",
            "sl.config.json",
            "sl.jsonl.tmp",
            ".sl.jsonl.tmp.4242",
            ".sl.config.json.tmp.4242",
            ".sl.jsonl.cai-lock",
        ] {
            assert!(owns("sl.jsonl", name), "{name}");
        }
        // Only the names cai gives its sidecars: a user's file that merely shares the stem
        // is not cai's to delete.
        for name in [
            "slx.jsonl",
            "notes.txt",
            "sl",
            ".sl",
            "my-sl.jsonl",
            "sl.notes.txt",
            "sl.jsonl.bak",
            "sl.helpful.jsonl",
        ] {
            assert!(!owns("sl.jsonl", name), "{name}");
        }
        assert!(owns("sl.helpful.jsonl", "sl.helpful.config.json"));
        assert!(owns("model", "model") && owns("model", ".model.cai-lock"));
        assert!(!owns("model", "models") && !owns("model", "model-notes"));
    }

    #[test]
    fn clearing_a_stage_deletes_only_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("critique");
        for f in [
            "sl.jsonl",
            "sl.config.json",
            "manifest.json",
            "model/checkpoints/1/w",
            "notes.txt",
            "mine/sl.jsonl",
        ] {
            touch(&stage.join(f));
        }
        touch(&stage.join(".sl.jsonl.cai-lock"));
        let writes = ["sl.jsonl", "manifest.json", "model"].map(String::from);
        let mut removed = clear_stage(&stage, &writes).unwrap();
        // The manifest last, so that a run killed half-way still lists what is left.
        assert_eq!(removed.last().unwrap(), "manifest.json");
        removed.sort();
        assert_eq!(
            removed,
            ["manifest.json", "model", "sl.config.json", "sl.jsonl"]
        );
        assert!(stage.join("notes.txt").is_file() && stage.join("mine/sl.jsonl").is_file());
        assert!(stage.join(".sl.jsonl.cai-lock").is_file());
        assert_eq!(first_foreign(&stage, &writes, &writes), None);
        touch(&stage.join("sl.jsonl"));
        assert_eq!(
            first_foreign(&stage, &writes, &[]),
            Some(stage.join("sl.jsonl"))
        );
        assert!(clear_stage(&dir.path().join("gone"), &writes)
            .unwrap()
            .is_empty());
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&stage, &link).unwrap();
            assert!(clear_stage(&link, &writes).is_err());
            assert!(stage.join("sl.jsonl").is_file());
        }
    }
}
