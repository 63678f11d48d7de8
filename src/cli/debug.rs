//! `mailcow-borg debug ...`: tools that expose the format core, so its behaviour can be compared
//! with real borg from outside.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::Outcome;
use super::access::{AccessArgs, runtime, with_repository};
use super::pyjson::Json;
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::envelope::MANIFEST_ID;
use crate::format::manifest::Operation;
use crate::format::msgpack::{self, StreamDecoder, Value};

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Print the chunk sizes borg would cut FILE into, one per line.
    Chunk {
        /// The key's chunk_seed (signed 32-bit; 0 for unencrypted repositories).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        seed: i32,
        /// Chunker params as borg's --chunker-params: buzhash,MIN,MAX,MASK,WINDOW or fixed,BLOCK[,HEADER].
        #[arg(long, default_value = "buzhash,19,23,21,4095")]
        params: ChunkerParams,
        /// The file to chunk; `-` reads standard input.
        file: PathBuf,
    },
    /// Print the decrypted manifest as JSON, like `borg debug dump-manifest REPO -`.
    DumpManifest {
        /// REPOSITORY (default: BORG_REPO).
        location: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Print an archive's metadata and items as JSON, like `borg debug dump-archive REPO::A -`.
    DumpArchive {
        /// REPOSITORY::ARCHIVE.
        location: String,
        #[command(flatten)]
        access: AccessArgs,
    },
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<Outcome> {
    match cmd {
        DebugCommand::Chunk { seed, params, file } => chunk(seed, params, &file),
        DebugCommand::DumpManifest { location, access } => dump_manifest(location, access),
        DebugCommand::DumpArchive { location, access } => dump_archive(&location, access),
    }
    .map(|()| Outcome::Ok)
}

/// borg's `prepare_dump_dict`: bytes as text when they are UTF-8 (and do not start with DEL),
/// else DEL followed by hex; keys as text; order kept.
fn dump_json(value: &Value) -> Json {
    Json::from_msgpack(value, &|bytes| match std::str::from_utf8(bytes) {
        Ok(text) if !bytes.starts_with(b"\x7f") => Json::str(text),
        _ => Json::str(format!("\u{7f}{}", crate::format::key::hex(bytes))),
    })
}

/// Python's `textwrap.indent(text, "    ")`: every non-empty line gets the prefix.
fn indented(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            if line.trim().is_empty() {
                line.to_string()
            } else {
                format!("    {line}")
            }
        })
        .collect()
}

fn dump_manifest(location: Option<String>, access: AccessArgs) -> anyhow::Result<()> {
    let (location, options) = access.resolve(location.as_deref())?;
    let plaintext = runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Check,
        async |repo| Ok(repo.object(MANIFEST_ID).await?),
    ))?;
    let dict = msgpack::decode(&plaintext)?;
    let mut out = io::stdout().lock();
    out.write_all(dump_json(&dict).to_dump().as_bytes())?;
    out.flush()?;
    Ok(())
}

fn dump_archive(location: &str, access: AccessArgs) -> anyhow::Result<()> {
    let (location, options) = access.resolve(Some(location))?;
    let Some(name) = location.archive.clone() else {
        anyhow::bail!("no archive given (REPOSITORY::ARCHIVE)");
    };
    runtime()?.block_on(with_repository(
        &location,
        &options,
        Operation::Check,
        async |repo| {
            let entry = repo
                .manifest
                .archive(name.as_bytes())
                .ok_or_else(|| anyhow::anyhow!("archive {name:?} does not exist"))?;
            let manifest_entry = Value::Map(vec![
                (Value::raw("id"), Value::raw(entry.id.to_vec())),
                (Value::raw("time"), Value::raw(entry.time.clone())),
            ]);
            let meta = msgpack::decode(&repo.object(entry.id).await?)?;
            let mut out = BufWriter::new(io::stdout().lock());
            write!(out, "{{\n    \"_name\": {},\n", Json::str(&name).to_line())?;
            write!(
                out,
                "    \"_manifest_entry\":\n{},\n",
                indented(&dump_json(&manifest_entry).to_dump())
            )?;
            write!(
                out,
                "    \"_meta\":\n{},\n",
                indented(&dump_json(&meta).to_dump())
            )?;
            writeln!(out, "    \"_items\": [")?;
            let mut decoder = StreamDecoder::new();
            let mut first = true;
            for id in meta
                .get("items")
                .and_then(Value::as_array)
                .unwrap_or_default()
            {
                let id = id
                    .as_raw()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| anyhow::anyhow!("the archive's item list is damaged"))?;
                let chunk = repo.object(id).await?;
                for item in decoder.feed(&chunk)? {
                    if !first {
                        writeln!(out, ",")?;
                    }
                    first = false;
                    write!(out, "{}", indented(&dump_json(&item).to_dump()))?;
                }
            }
            write!(out, "\n    ]\n}}\n")?;
            out.flush()?;
            Ok(())
        },
    ))
}

fn chunk(seed: i32, params: ChunkerParams, file: &PathBuf) -> anyhow::Result<()> {
    let mut input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(file).with_context(|| format!("cannot open {}", file.display()))?)
    };
    let mut chunker = Chunker::new(params, seed);
    let mut out = BufWriter::new(io::stdout().lock());
    while let Some(chunk) = chunker
        .next_chunk(&mut input)
        .with_context(|| format!("cannot read {}", file.display()))?
    {
        writeln!(out, "{}", chunk.len())?;
    }
    out.flush()?;
    Ok(())
}
