//! `mailcow-borg debug ...`: tools that expose the format core, so its behaviour can be compared
//! with real borg from outside.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use crate::format::chunker::{Chunker, ChunkerParams};

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
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Chunk { seed, params, file } => chunk(seed, params, &file),
    }
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
