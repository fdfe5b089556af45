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
    // A reader that stops early ends a command's output quietly (`sendgate list | head`),
    // as for any Unix tool. The worker keeps SIGPIPE ignored: a peer that goes away is
    // an error it handles, not a reason to die.
    if std::env::args().nth(1).as_deref() != Some("run") {
        // SAFETY: restoring the default disposition of one signal, before any thread
        // starts; no handler function is involved.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    std::process::exit(sendgate::cli::main());
}
