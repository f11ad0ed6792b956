//! `radixserve`: generate, chat, serve and bench on a radix-cached LLM engine.

mod args;
mod bench;
mod http;

use anyhow::{bail, Context, Result};
use args::{EngineArgs, SamplingArgs, ServeArgs};
use clap::{Args, Parser, Subcommand};
use engine::{ChatMessage, Input, StreamEvent};
use std::io::{BufRead, Write};

/// mimalloc keeps freed memory for reuse, where the system allocator maps and unmaps every
/// large buffer (a projection's output, a logits row), faulting its pages in again each step.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// radixserve: an LLM serving engine with SGLang's RadixAttention prefix cache.
#[derive(Parser, Debug)]
#[command(name = "radixserve", version, about, long_about = None, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a completion for one prompt and print it.
    Generate(GenerateArgs),
    /// Chat interactively; later turns reuse the cached conversation.
    Chat(ChatArgs),
    /// Serve the OpenAI-compatible and SGLang-native HTTP APIs.
    Serve(ServeArgs),
    /// Run shared-prefix workloads with the cache on and off and report the difference.
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// The prompt.
    prompt: String,
    /// Send the prompt as a user chat message through the model's chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// A system prompt for the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,radixserve=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => chat(a),
        Command::Serve(a) => serve(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let engine = a.engine.engine()?;
    let input = if a.chat {
        Input::Chat(vec![ChatMessage::new("user", a.prompt.clone())])
    } else {
        Input::Text(a.prompt.clone())
    };
    let stream = engine.generate(a.sampling.request(input))?;
    let mut out = std::io::stdout().lock();
    for event in stream {
        match event {
            StreamEvent::Delta(d) => {
                write!(out, "{}", d.text)?;
                out.flush()?;
            }
            StreamEvent::Failed(e) => bail!("generation failed: {e}"),
            StreamEvent::Progress(_) => {}
            StreamEvent::Done(c) => {
                writeln!(out)?;
                eprintln!(
                    "[{} prompt tokens ({} cached), {} generated, finish: {}, {:.2}s]",
                    c.usage.prompt_tokens,
                    c.usage.cached_tokens,
                    c.usage.completion_tokens,
                    c.finish_reason.kind(),
                    c.e2e_latency
                );
            }
        }
    }
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let engine = a.engine.engine()?;
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    eprintln!("chat: type a message and press enter; an empty line or end of input quits.");
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(ChatMessage::new("user", line.trim_end().to_string()));
        let stream = engine.generate(a.sampling.request(Input::Chat(messages.clone())))?;
        let mut reply = String::new();
        for event in stream {
            match event {
                StreamEvent::Delta(d) => {
                    write!(out, "{}", d.text)?;
                    out.flush()?;
                    reply.push_str(&d.text);
                }
                StreamEvent::Failed(e) => bail!("generation failed: {e}"),
                StreamEvent::Progress(_) => {}
                StreamEvent::Done(c) => {
                    writeln!(out)?;
                    eprintln!(
                        "[turn: {} prompt tokens, {} cached, {} generated]",
                        c.usage.prompt_tokens, c.usage.cached_tokens, c.usage.completion_tokens
                    );
                }
            }
        }
        messages.push(ChatMessage::new("assistant", reply));
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let options = a.options()?;
    let engine = a.engine.engine()?;
    // Blocking work (tokenizing prompts, waiting for a flush) runs on a bounded pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(http::serve(std::sync::Arc::new(engine), options))
}
