//! The data stage: the lab's world written first if the recipe asks for one, then each prompt
//! set's sources joined into one file (ids made unique, thinned to `[data] limit`).
//!
//! A source is what `cai generate --prompts` takes (read by `cai_data`): a JSONL, `.jsonl.gz`,
//! JSON or Parquet file of the recipe (relative to its folder, or `@stage/…` in the run), with
//! `?` options after it (`harm.parquet?prompt=question`), or a Hub dataset (`org/name`,
//! `hf://datasets/org/name[@rev][/path]`, with `?subset=`, `?split=`…). A local file is an
//! input of the stage, hashed into its fingerprint by content; a Hub dataset is pinned when
//! the stage is planned to the commit its revision names then, and the pinned sources are part
//! of the stage's config, so the fingerprint changes when the revision moves, and the join
//! reads that very commit.

use std::path::PathBuf;

use cai_data::{DataSpec, Location};
use cai_hub::Hub;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::words::Words;
use super::{Job, PlanError, RunContext, StagePlan};
use crate::recipe::{PromptSet, Stage};

/// `cai lab generate`: the lab's world of a seed. Only its assets are needed (prompts,
/// constitution, few-shot examples, context), so the corpus is one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabWorldJob {
    /// The folder written (`@data/lab`).
    pub output: PathBuf,
    /// The world's seed.
    pub seed: u64,
}

impl LabWorldJob {
    /// Corpus documents written: one, since only the assets are read.
    pub const SIZE: usize = 1;

    /// The equivalent command's words.
    pub fn words(&self) -> Vec<String> {
        Words::new(&["lab", "generate"])
            .path("--output", &self.output)
            .flag("--seed", self.seed)
            .flag("--size", Self::SIZE)
            .switch("--overwrite", true)
            .done()
    }
}

/// What one entry of a prompt set names, found without the network.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Named {
    /// A local file (of the recipe, or of the run), with the `?` options after it, if any.
    File {
        /// The file, resolved.
        path: PathBuf,
        /// The text after `?`.
        options: Option<String>,
    },
    /// A Hub dataset, as written.
    Hub(DataSpec),
}

/// What `spec`, an entry of `[data] <set>`, names: an existing file (whatever its name holds),
/// a file with `?` options, a run path (`@data/…`, written earlier in the run), a Hub
/// dataset, or else a file that does not exist (which [`super::check_inputs`] refuses,
/// naming the key, before the run starts); malformed `?` options are an error naming the
/// key.
pub(super) fn named(ctx: &RunContext, set: PromptSet, spec: &str) -> Result<Named, PlanError> {
    let field = format!("[data] {}", set.name());
    let error = |message: String| PlanError::Source {
        what: field.clone(),
        spec: spec.to_owned(),
        message,
    };
    let whole = ctx.path(spec)?;
    if whole.is_file() {
        return Ok(Named::File {
            path: whole,
            options: None,
        });
    }
    let (base, options) = match spec.split_once('?') {
        Some((base, options)) => (base, Some(options.to_owned())),
        None => (spec, None),
    };
    let path = ctx.path(base)?;
    if path.is_file() || base.starts_with('@') {
        if let Some(options) = &options {
            DataSpec::parse(&format!("{}?{options}", path.display())).map_err(error)?;
        }
        return Ok(Named::File { path, options });
    }
    let parsed = DataSpec::parse(spec).map_err(error)?;
    if matches!(parsed.location, Location::Hub { .. }) {
        return Ok(Named::Hub(parsed));
    }
    Ok(Named::File { path, options })
}

/// The error for a source file of `[data] <set>` that does not exist.
pub(super) fn missing(set: PromptSet, spec: &str, path: &std::path::Path) -> PlanError {
    PlanError::Source {
        what: format!("[data] {}", set.name()),
        spec: spec.to_owned(),
        message: format!(
            "no such file ({}; a relative path is read from the recipe's folder); name an \
             existing JSONL, .jsonl.gz, JSON or Parquet file, or a Hub dataset (org/name, \
             hf://datasets/org/name)",
            path.display()
        ),
    }
}

pub(super) fn plan(ctx: &RunContext) -> Result<StagePlan, PlanError> {
    plan_with(ctx, None)
}

/// [`plan`], asking `hub` (else the Hub of the environment) for the commit of each Hub
/// dataset.
pub(crate) fn plan_with(ctx: &RunContext, hub: Option<&Hub>) -> Result<StagePlan, PlanError> {
    let r = ctx.recipe();
    let dir = ctx.stage_dir(Stage::Data);
    let mut p = StagePlan::new(Stage::Data, json!({ "data": r.data }));
    if let Some(seed) = r.data.lab_world {
        p.steps
            .push(super::Step::Job(Box::new(Job::LabGenerate(LabWorldJob {
                output: dir.join("lab"),
                seed,
            }))));
        p.outputs.push(("lab world".into(), dir.join("lab")));
    }
    let mut env_hub = None;
    let mut pinned_sets = Map::new();
    for set in PromptSet::ALL {
        let specs = r.data.files(set);
        if specs.is_empty() {
            continue;
        }
        let mut inputs = Vec::with_capacity(specs.len());
        let mut pinned = Vec::new();
        for spec in specs {
            match named(ctx, set, spec)? {
                Named::File { path, options } => {
                    if !path.starts_with(&dir) {
                        p.input_path(set.name(), path.clone());
                    }
                    inputs.push(match options {
                        Some(options) => PathBuf::from(format!("{}?{options}", path.display())),
                        None => path,
                    });
                }
                Named::Hub(parsed) => {
                    let hub = match hub {
                        Some(hub) => hub,
                        None => &*env_hub.get_or_insert_with(Hub::from_env),
                    };
                    let text = cai_data::pin_revision_with(&parsed, hub).map_err(|e| {
                        PlanError::Source {
                            what: format!("[data] {}", set.name()),
                            spec: spec.clone(),
                            message: e.to_string(),
                        }
                    })?;
                    pinned.push(json!({ "source": spec, "pinned": text }));
                    inputs.push(PathBuf::from(text));
                }
            }
        }
        if !pinned.is_empty() {
            pinned_sets.insert(set.name().into(), Value::Array(pinned));
        }
        let output = ctx.prompt_set(set);
        p.join(inputs, output.clone(), r.data.limit);
        p.outputs.push((set.name().into(), output));
    }
    if !pinned_sets.is_empty() {
        p.config["hub_sources"] = Value::Object(pinned_sets);
    }
    for (role, spec) in [
        ("constitution", Some(r.data.constitution.as_str())),
        ("few-shot", r.data.few_shot.as_deref()),
        ("context", r.data.context.as_deref()),
    ] {
        if let Some(spec) = spec.filter(|s| !s.starts_with('@')) {
            let path = ctx.path(spec)?;
            if path.exists() {
                p.input_path(role, path);
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::sync::Arc;

    use cai_hub::fake::{FakeHub, FakeRepo};
    use cai_hub::HubConfig;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;
    use crate::recipe::LoadedRecipe;
    use crate::runner::join_prompt_files_with;
    use crate::stages::{outputs::fingerprint, InputSpec, Step};

    /// A Parquet file of one UTF-8 column.
    fn parquet(column: &str, values: &[&str]) -> Vec<u8> {
        let schema = format!("message schema {{ REQUIRED BYTE_ARRAY {column} (UTF8); }}");
        let schema = Arc::new(parse_message_type(&schema).unwrap());
        let mut out = Vec::new();
        let mut writer = SerializedFileWriter::new(&mut out, schema, Default::default()).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut col = group.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = values.iter().map(|v| ByteArray::from(*v)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        out
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    /// A recipe in `dir` with only the data stage, whose red-team set is `sources`.
    fn recipe(dir: &Path, sources: &[&str]) -> LoadedRecipe {
        let list: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "name = \"t\"\n[models]\nbase = \"lab\"\n[data]\nred_team = [{}]\n\
             constitution = \"default\"\n",
            list.join(", ")
        );
        let path = dir.join("r.toml");
        std::fs::write(&path, text).unwrap();
        LoadedRecipe::load(Some(&path), false).unwrap()
    }

    fn hub(endpoint: &str, cache: &Path) -> Hub {
        Hub::new(HubConfig {
            endpoint: endpoint.to_owned(),
            token: None,
            token_source: None,
            offline: false,
            cache: Some(cache.to_path_buf()),
            progress: false,
        })
    }

    /// The join step of the red-team set.
    fn join_inputs(plan: &StagePlan) -> Vec<PathBuf> {
        plan.steps
            .iter()
            .find_map(|s| match s {
                Step::Join { inputs, .. } => Some(inputs.clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn gzip_parquet_and_optioned_files_are_inputs_and_join_into_prompts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("p.jsonl"),
            "{\"id\": \"a\", \"prompt\": \"plain\"}\n",
        )
        .unwrap();
        std::fs::write(
            d.join("g.jsonl.gz"),
            gzip("{\"prompt\": \"one\"}\n\n{\"prompt\": \"two\"}\n"),
        )
        .unwrap();
        std::fs::write(d.join("h.parquet"), parquet("question", &["Why?", "How?"])).unwrap();
        let loaded = recipe(d, &["p.jsonl", "g.jsonl.gz", "h.parquet?prompt=question"]);
        let run = d.join("run");
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: &run,
        };
        let plan = plan_with(&ctx, None).unwrap();
        // Each local file is an input (hashed by content); the options stay on the source.
        let inputs: Vec<&Path> = plan
            .inputs
            .iter()
            .filter_map(|i| match i {
                InputSpec::Path { role, path } if role == "red_team" => Some(path.as_path()),
                _ => None,
            })
            .collect();
        assert_eq!(
            inputs,
            [d.join("p.jsonl"), d.join("g.jsonl.gz"), d.join("h.parquet")]
        );
        assert_eq!(plan.config, json!({ "data": loaded.recipe.data }));
        let sources = join_inputs(&plan);
        assert_eq!(
            sources[2],
            PathBuf::from(format!("{}?prompt=question", d.join("h.parquet").display()))
        );
        let out = d.join("red_team.jsonl");
        let mut offline = hub("http://127.0.0.1:9", d).config().clone();
        offline.offline = true;
        let offline = Hub::new(offline);
        assert_eq!(
            join_prompt_files_with(&sources, &out, None, &offline).unwrap(),
            5
        );
        let prompts = cai_core::prompts::read_prompts(&out).unwrap();
        let got: Vec<(&str, &str)> = prompts
            .iter()
            .map(|p| (p.id.as_str(), p.request()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "plain"),
                ("g-0", "one"),
                ("g-2", "two"),
                ("h-0", "Why?"),
                ("h-1", "How?")
            ]
        );
    }

    #[test]
    fn a_missing_or_malformed_source_names_the_recipe_field() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("h.parquet"), parquet("question", &["Why?"])).unwrap();
        let run = d.join("run");
        for (sources, wanted) in [
            (
                ["absent.jsonl.gz"],
                "the recipe's [data] red_team (absent.jsonl.gz): no such file",
            ),
            (
                ["h.parquet?split=train"],
                "the recipe's [data] red_team (h.parquet?split=train): split= and subset= \
                 choose files of a Hub dataset",
            ),
            (
                ["h.parquet?limit=0"],
                "the recipe's [data] red_team (h.parquet?limit=0): limit=0",
            ),
        ] {
            let loaded = recipe(d, &sources);
            let ctx = RunContext {
                loaded: &loaded,
                run_dir: &run,
            };
            // Options are checked when the stage is planned, files before the run starts.
            let err = match crate::stages::plan_all(&ctx) {
                Ok(plans) => crate::stages::check_inputs(&ctx, &plans)
                    .unwrap_err()
                    .to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
        // A Hub dataset the Hub does not have: the field and the id.
        let server = FakeHub::start();
        let loaded = recipe(d, &["org/absent?split=train"]);
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: &run,
        };
        let err = plan_with(&ctx, Some(&hub(server.url(), d)))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "the recipe's [data] red_team (org/absent?split=train): dataset \
                             org/absent"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_hub_source_is_read_at_the_commit_in_the_stage_fingerprint() {
        let server = FakeHub::start();
        let rows = gzip(
            "[{\"transcript\": \"\\n\\nHuman: How do I pick a lock?\\n\\nAssistant: No.\", \
             \"rating\": 1.0, \"tags\": null}]",
        );
        let files: [(&str, &[u8]); 1] = [("red-team-attempts/red_team_attempts.jsonl.gz", &rows)];
        server.add_dataset("org/hh", FakeRepo::new("c1", &files));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let client = hub(server.url(), &d.join("cache"));
        let loaded = recipe(d, &["org/hh?subset=red-team-attempts"]);
        let run = d.join("run");
        let ctx = RunContext {
            loaded: &loaded,
            run_dir: &run,
        };
        let plan = plan_with(&ctx, Some(&client)).unwrap();
        let pinned = "hf://datasets/org/hh@c1?subset=red-team-attempts";
        assert_eq!(
            plan.config["hub_sources"],
            json!({"red_team": [{"source": "org/hh?subset=red-team-attempts", "pinned": pinned}]})
        );
        assert!(plan.inputs.is_empty(), "{:?}", plan.inputs);
        assert_eq!(join_inputs(&plan), [PathBuf::from(pinned)]);
        let out = d.join("red_team.jsonl");
        join_prompt_files_with(&join_inputs(&plan), &out, None, &client).unwrap();
        let prompts = cai_core::prompts::read_prompts(&out).unwrap();
        assert_eq!(prompts.len(), 1);
        assert_eq!(
            (prompts[0].id.as_str(), prompts[0].request()),
            ("red_team_attempts-0", "How do I pick a lock?")
        );
        // The same revision plans the same stage; the branch moving changes its fingerprint.
        let again = plan_with(&ctx, Some(&client)).unwrap();
        assert_eq!(fingerprint(&again, &[]), fingerprint(&plan, &[]));
        server.add_dataset("org/hh", FakeRepo::new("c2", &files));
        let moved = plan_with(&ctx, Some(&client)).unwrap();
        assert_ne!(fingerprint(&moved, &[]), fingerprint(&plan, &[]));
        assert!(join_inputs(&moved)[0].to_string_lossy().contains("@c2?"));
    }
}
