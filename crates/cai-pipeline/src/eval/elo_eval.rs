//! A whole Elo evaluation in one directory: answers of every snapshot to every prompt set
//! (`samples/{set}.jsonl`), every pair judged on the set's axis (`comparisons/{set}.jsonl`),
//! and the ratings (`elo.json`, the table `elo.md`, the figure `elo.svg`). The settings that
//! decide the samples and comparisons are saved as `eval_config.json`; a rerun with the same
//! settings resumes, and one that adds snapshots or prompts makes only what is new.
//!
//! The steps are separate calls so that a caller loads one model at a time:
//! [`EloEval::open`], then [`EloEval::sample`] per snapshot and set, [`EloEval::compare`]
//! per set, [`EloEval::report`] (an [`EloReport`]) and [`EloEval::write_report`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use cai_core::prompts::Prompt;
use serde::{Deserialize, Serialize};

use super::compare::{compare_snapshots, comparison_id, read_comparisons, Pairings};
use super::elo::{elo_ratings, EloSettings, Outcome};
use super::elo_report::{AxisRatings, EloReport, SnapshotHarm, SnapshotRating};
use super::harm::{judge_samples, HarmSummary};
use super::judge::Judge;
use super::samples::{
    check_snapshot_name, check_snapshot_names, read_samples, sample_id, sample_snapshot,
    SampleRecord, SampleSettings, Snapshot,
};
use super::Axis;
use crate::{PipelineError, Result};

/// One prompt set and the axis its comparisons are on.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// Its name, also its file stem (`red_team`, `benign`).
    pub name: String,
    /// What its comparisons ask.
    pub axis: Axis,
    /// Its prompts.
    pub prompts: Vec<Prompt>,
}

/// What decides the samples and comparisons of a directory; a rerun must match it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EloEvalConfig {
    /// How the answers are sampled.
    pub samples: SampleSettings,
    /// The judge's name.
    pub judge: String,
    /// Seed of the order in which each pair is shown to the judge.
    pub seed: u64,
    /// Each snapshot's model, as given (`lab`, a directory, an endpoint), with its context
    /// file if it has one: a snapshot's answers are only reused under the same model.
    pub snapshots: BTreeMap<String, String>,
}

/// The evaluation directory.
#[derive(Debug, Clone)]
pub struct EloEval {
    dir: PathBuf,
    config: EloEvalConfig,
    /// Held while the evaluation is open: no other cai process writes the directory.
    _lock: std::sync::Arc<cai_core::lock::WriterLock>,
}

/// The file of the settings.
const CONFIG_FILE: &str = "eval_config.json";

impl EloEval {
    /// Open `dir` for an evaluation under `config`, creating it, and lock it against other
    /// writers. With `overwrite`, earlier samples, comparisons and ratings there are removed
    /// first; otherwise an earlier evaluation must have used the same sampling, judge and
    /// seed, and the same model for every snapshot name both use (new snapshots are added).
    ///
    /// Only a directory an evaluation made (it holds `eval_config.json`) is ever cleared: a
    /// folder with `samples/` or `comparisons/` of some other origin is refused, not emptied.
    pub fn open(dir: &Path, config: EloEvalConfig, overwrite: bool) -> Result<Self> {
        for name in config.snapshots.keys() {
            check_snapshot_name(name)?;
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| cai_core::Error::Io { path, source }
        };
        let lock = cai_core::lock::WriterLock::acquire(dir)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            let foreign: Vec<&str> = ["samples", "comparisons", "elo.json", "elo.md", "elo.svg"]
                .into_iter()
                .filter(|name| dir.join(name).exists())
                .collect();
            if !foreign.is_empty() {
                return Err(PipelineError::Config(format!(
                    "{} holds {} but no {CONFIG_FILE}, so it is not a folder cai eval elo \
                     made; cai leaves it as it is: choose another output folder",
                    dir.display(),
                    foreign.join(", ")
                )));
            }
        }
        let mut config = config;
        if overwrite {
            for sub in ["samples", "comparisons"] {
                let path = dir.join(sub);
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                }
            }
            for file in ["elo.json", "elo.md", "elo.svg", CONFIG_FILE] {
                let path = dir.join(file);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
            }
        } else if config_path.exists() {
            let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
            let saved: EloEvalConfig = serde_json::from_str(&text).map_err(|e| {
                cai_core::Error::file(
                    &config_path,
                    format!("{e}; expected the settings of an earlier cai eval elo"),
                )
            })?;
            let mut differing = Vec::new();
            if saved.samples != config.samples {
                differing.push(format!(
                    "sampling was {}, now {}",
                    json(&saved.samples),
                    json(&config.samples)
                ));
            }
            if saved.judge != config.judge {
                differing.push(format!("judge was {}, now {}", saved.judge, config.judge));
            }
            if saved.seed != config.seed {
                differing.push(format!("seed was {}, now {}", saved.seed, config.seed));
            }
            for (name, model) in &config.snapshots {
                if let Some(before) = saved.snapshots.get(name).filter(|b| *b != model) {
                    differing.push(format!("snapshot {name} was {before}, now {model}"));
                }
            }
            if !differing.is_empty() {
                return Err(PipelineError::Config(format!(
                    "{} holds an evaluation with other settings ({}; see {}); rerun with the \
                     same settings, overwrite it, or choose another directory",
                    dir.display(),
                    differing.join("; "),
                    config_path.display()
                )));
            }
            let mut snapshots = saved.snapshots;
            snapshots.extend(config.snapshots);
            config.snapshots = snapshots;
        }
        let text = serde_json::to_string_pretty(&config).expect("configs serialise") + "\n";
        let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &config_path))
            .map_err(io(&config_path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force (with every snapshot evaluated here so far).
    pub fn config(&self) -> &EloEvalConfig {
        &self.config
    }

    /// Where the answers to the set `set` go.
    pub fn samples_path(&self, set: &str) -> PathBuf {
        self.dir.join("samples").join(format!("{set}.jsonl"))
    }

    /// Where the comparisons on the set `set` go.
    pub fn comparisons_path(&self, set: &str) -> PathBuf {
        self.dir.join("comparisons").join(format!("{set}.jsonl"))
    }

    /// The answers of `snapshot` to `set` that are not there yet; returns how many were
    /// sampled now.
    pub fn sample(
        &self,
        snapshot: &Snapshot<'_>,
        set: &EvalSet,
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize> {
        check_snapshot_name(&set.name)?;
        if !self.config.snapshots.contains_key(&snapshot.name) {
            return Err(PipelineError::Config(format!(
                "snapshot {} is not in the evaluation's settings; open it with every snapshot",
                snapshot.name
            )));
        }
        sample_snapshot(
            snapshot,
            &set.prompts,
            &self.config.samples,
            batch_size,
            &self.samples_path(&set.name),
            progress,
        )
    }

    /// The comparisons of every pair of `snapshots` on `set` that are not there yet; returns
    /// how many were made now.
    pub fn compare(
        &self,
        judge: &dyn Judge,
        set: &EvalSet,
        snapshots: &[String],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<usize> {
        check_snapshot_names(snapshots.iter().map(String::as_str))?;
        self.check_judge(judge)?;
        let samples = read_samples(&self.samples_path(&set.name))?;
        let pairings = Pairings {
            axis: set.axis,
            prompts: &set.prompts,
            snapshots,
            samples: &samples,
            seed: self.config.seed,
        };
        compare_snapshots(
            judge,
            &pairings,
            batch_size,
            &self.comparisons_path(&set.name),
            progress,
        )
    }

    /// How many of `set`'s prompts `snapshot` has not answered yet.
    pub fn missing_samples(&self, snapshot: &str, set: &EvalSet) -> Result<usize> {
        let done = read_samples(&self.samples_path(&set.name))?;
        Ok(set
            .prompts
            .iter()
            .filter(|p| !done.contains_key(&sample_id(snapshot, &p.id)))
            .count())
    }

    /// How many comparisons of `snapshots` on `set` are not made yet.
    pub fn missing_comparisons(&self, set: &EvalSet, snapshots: &[String]) -> Result<usize> {
        let done: HashSet<String> = read_comparisons(&self.comparisons_path(&set.name))?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut missing = 0;
        for prompt in &set.prompts {
            for (i, x) in snapshots.iter().enumerate() {
                for y in &snapshots[i + 1..] {
                    missing += usize::from(!done.contains(&comparison_id(&prompt.id, x, y)));
                }
            }
        }
        Ok(missing)
    }

    /// How many comparisons [`EloEval::compare`] would make on `set` in all.
    pub fn comparisons_in(set: &EvalSet, snapshots: usize) -> usize {
        set.prompts.len() * snapshots * snapshots.saturating_sub(1) / 2
    }

    fn check_judge(&self, judge: &dyn Judge) -> Result<()> {
        if judge.name() == self.config.judge {
            return Ok(());
        }
        Err(PipelineError::Config(format!(
            "the judge {} is not the evaluation's judge {}",
            judge.name(),
            self.config.judge
        )))
    }

    /// The ratings of `snapshots` on each set, from the comparisons on the sets' prompts, with
    /// `reference` at 0; with a `harm_judge` that gives verdicts, the harm rate of each
    /// snapshot's answers to the harmlessness sets.
    pub fn report(
        &self,
        sets: &[EvalSet],
        snapshots: &[String],
        reference: &str,
        settings: &EloSettings,
        harm_judge: Option<&dyn Judge>,
    ) -> Result<EloReport> {
        check_snapshot_names(snapshots.iter().map(String::as_str))?;
        let index: HashMap<&str, usize> = snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let Some(&reference_index) = index.get(reference) else {
            return Err(PipelineError::Config(format!(
                "reference snapshot {reference:?}: expected one of {}",
                snapshots.join(", ")
            )));
        };
        let mut axes = Vec::new();
        let mut harm = Vec::new();
        for set in sets {
            let by_prompt: HashMap<&str, usize> = set
                .prompts
                .iter()
                .enumerate()
                .map(|(i, p)| (p.id.as_str(), i))
                .collect();
            let mut groups: Vec<Vec<Outcome>> = vec![Vec::new(); set.prompts.len()];
            let mut comparisons = 0;
            for c in read_comparisons(&self.comparisons_path(&set.name))? {
                let (Some(&k), Some(&a), Some(&b)) = (
                    by_prompt.get(c.prompt_id.as_str()),
                    index.get(c.snapshot_a.as_str()),
                    index.get(c.snapshot_b.as_str()),
                ) else {
                    continue;
                };
                groups[k].push(Outcome {
                    a,
                    b,
                    score_a: c.p_a,
                });
                comparisons += 1;
            }
            groups.retain(|g| !g.is_empty());
            let ratings = elo_ratings(snapshots.len(), &groups, reference_index, settings)?;
            axes.push(AxisRatings {
                set: set.name.clone(),
                axis: set.axis,
                prompts: groups.len(),
                comparisons,
                ratings: snapshots
                    .iter()
                    .cloned()
                    .zip(ratings)
                    .map(|(snapshot, rating)| SnapshotRating { snapshot, rating })
                    .collect(),
            });
            if let Some(judge) = harm_judge.filter(|j| j.gives_harm()) {
                if set.axis == Axis::Harmlessness {
                    harm.extend(self.harm_rates(judge, set, snapshots)?);
                }
            }
        }
        Ok(EloReport {
            judge: self.config.judge.clone(),
            reference: reference.to_owned(),
            snapshots: snapshots.to_vec(),
            settings: *settings,
            axes,
            harm,
        })
    }

    /// The harm rate of each snapshot's answers to `set`.
    fn harm_rates(
        &self,
        judge: &dyn Judge,
        set: &EvalSet,
        snapshots: &[String],
    ) -> Result<Vec<SnapshotHarm>> {
        let samples = read_samples(&self.samples_path(&set.name))?;
        snapshots
            .iter()
            .map(|snapshot| {
                let mine: Vec<&SampleRecord> = set
                    .prompts
                    .iter()
                    .filter_map(|p| samples.get(&sample_id(snapshot, &p.id)))
                    .collect();
                let verdicts = judge_samples(judge, &mine, 64)?;
                Ok(SnapshotHarm {
                    snapshot: snapshot.clone(),
                    set: set.name.clone(),
                    summary: HarmSummary::of(&judge.name(), &verdicts),
                })
            })
            .collect()
    }

    /// Write `elo.json`, `elo.md` and, when the report has both axes, `elo.svg`; returns the
    /// paths written.
    pub fn write_report(&self, report: &EloReport) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let mut write = |name: &str, text: String| -> Result<()> {
            let path = self.dir.join(name);
            std::fs::write(&path, text).map_err(|source| cai_core::Error::Io {
                path: path.clone(),
                source,
            })?;
            written.push(path);
            Ok(())
        };
        write(
            "elo.json",
            serde_json::to_string_pretty(report).expect("reports serialise") + "\n",
        )?;
        write("elo.md", report.markdown())?;
        if let Some(svg) = report.svg()? {
            write("elo.svg", svg)?;
        }
        Ok(written)
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("settings serialise")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::eval::compare::tests::Longer;
    use crate::eval::samples::tests::{prompts, Echo};
    use crate::render::PromptFormat;

    fn config(snapshots: &[(&str, &str)]) -> EloEvalConfig {
        EloEvalConfig {
            samples: SampleSettings::default(),
            judge: "longer".into(),
            seed: 0,
            snapshots: snapshots
                .iter()
                .map(|(n, m)| ((*n).to_owned(), (*m).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_directory_holds_samples_comparisons_and_ratings_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let eval =
            EloEval::open(dir.path(), config(&[("short", "s"), ("long", "l")]), false).unwrap();
        assert_eq!(
            eval.missing_comparisons(
                &EvalSet {
                    name: "x".into(),
                    axis: Axis::Helpfulness,
                    prompts: prompts(3),
                },
                &["a".to_owned(), "b".to_owned(), "c".to_owned()]
            )
            .unwrap(),
            9
        );
        // "long" answers with a longer name, so the judge always prefers it.
        let (short, long) = (Echo::new("s"), Echo::new("lonnnnnnnnng"));
        let snapshot = |name: &str, model| Snapshot {
            name: name.into(),
            model,
            context: String::new(),
            format: PromptFormat::Transcript,
        };
        let sets = [
            EvalSet {
                name: "red_team".into(),
                axis: Axis::Harmlessness,
                prompts: prompts(6),
            },
            EvalSet {
                name: "benign".into(),
                axis: Axis::Helpfulness,
                prompts: prompts(4),
            },
        ];
        let names = vec!["short".to_owned(), "long".to_owned()];
        let judge = Longer(AtomicUsize::new(0));
        for set in &sets {
            for s in [snapshot("short", &short), snapshot("long", &long)] {
                eval.sample(&s, set, 4, &mut |_| {}).unwrap();
            }
            assert_eq!(
                eval.compare(&judge, set, &names, 4, &mut |_| {}).unwrap(),
                EloEval::comparisons_in(set, 2)
            );
        }
        let settings = EloSettings {
            bootstrap: 20,
            ..EloSettings::default()
        };
        let report = eval
            .report(&sets, &names, "short", &settings, None)
            .unwrap();
        let long_harmless = report.rating(Axis::Harmlessness, "long").unwrap();
        assert!(long_harmless.elo > 500.0, "{long_harmless:?}");
        assert_eq!(long_harmless.comparisons, 6);
        assert_eq!(long_harmless.win_rate, Some(1.0));
        assert_eq!(report.rating(Axis::Helpfulness, "short").unwrap().elo, 0.0);
        let written = eval.write_report(&report).unwrap();
        assert_eq!(written.len(), 3);
        let table = std::fs::read_to_string(dir.path().join("elo.md")).unwrap();
        assert!(table.contains("| long |"), "{table}");
        let saved: EloReport =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("elo.json")).unwrap())
                .unwrap();
        assert_eq!(saved, report);

        assert!(eval
            .report(&sets, &names, "nobody", &settings, None)
            .is_err());
        // The directory is locked while open.
        let locked = EloEval::open(dir.path(), config(&[("long", "l")]), false).unwrap_err();
        assert!(
            locked.to_string().contains("another cai process"),
            "{locked}"
        );
        drop(eval);

        // Reopened with the same settings: nothing new to sample or compare.
        let again = EloEval::open(dir.path(), config(&[("long", "l")]), false).unwrap();
        assert_eq!(again.config().snapshots.len(), 2);
        let calls = judge.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            again
                .sample(&snapshot("long", &long), &sets[0], 4, &mut |_| {})
                .unwrap(),
            0
        );
        assert_eq!(again.missing_samples("long", &sets[0]).unwrap(), 0);
        assert_eq!(again.missing_comparisons(&sets[0], &names).unwrap(), 0);
        assert_eq!(
            again
                .compare(&judge, &sets[0], &names, 4, &mut |_| {})
                .unwrap(),
            0
        );
        assert_eq!(judge.0.load(std::sync::atomic::Ordering::Relaxed), calls);
        drop(again);
        // Another model under an old name, or another judge, is refused.
        let err = EloEval::open(dir.path(), config(&[("long", "other")]), false).unwrap_err();
        assert!(
            err.to_string().contains("snapshot long was l, now other"),
            "{err}"
        );
        let mut other_judge = config(&[]);
        other_judge.judge = "oracle".into();
        assert!(EloEval::open(dir.path(), other_judge, false).is_err());
        // Overwrite starts afresh.
        let fresh = EloEval::open(dir.path(), config(&[("long", "other")]), true).unwrap();
        assert!(!fresh.samples_path("red_team").exists());
    }

    #[test]
    fn a_folder_cai_did_not_make_is_never_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("samples/notes.txt");
        std::fs::create_dir_all(mine.parent().unwrap()).unwrap();
        std::fs::write(&mine, "my own notes").unwrap();
        for overwrite in [false, true] {
            let err = EloEval::open(dir.path(), config(&[("a", "m")]), overwrite).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("samples") && text.contains("eval_config.json"),
                "{text}"
            );
            assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my own notes");
        }
    }
}
