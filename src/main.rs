//! The binary: parse arguments, run the command, map its result to an exit code.

fn main() {
    std::process::exit(sendgate::cli::main());
}
