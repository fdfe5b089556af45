//! The binary: parse arguments, run the command, map its result to an exit code.

fn main() {
    // A panic on any thread ends the process at once, whatever the build profile (the
    // release profile already aborts): a worker with a dead engine thread and live
    // tokio threads would hang on, fed by no one, instead of being restarted by systemd.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
    std::process::exit(sendgate::cli::main());
}
