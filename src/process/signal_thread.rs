//! The thread that turns signals into events. Signals are blocked in every thread (see `startup`);
//! this one takes them with `sigwaitinfo`, so no code ever runs in a signal handler. SIGCHLD is
//! answered here by reaping (never forwarded); every other signal becomes `Event::Signal`.

use std::io;
use std::thread;

use crossbeam_channel::Sender;

use crate::process::reaper;
use crate::process::signal::Sig;
use crate::process::startup;
use crate::supervisor::event::Event;

pub fn spawn(events: Sender<Event>) -> io::Result<()> {
    let set = startup::handled_signals();
    thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            loop {
                // SAFETY: `set` is an initialised signal set; no siginfo is wanted.
                let number = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
                if number < 0 {
                    continue; // EINTR (e.g. after SIGSTOP/SIGCONT)
                }
                let event = if number == libc::SIGCHLD {
                    let (exits, children_left) = reaper::reap_children();
                    if exits.is_empty() {
                        continue;
                    }
                    Event::Reaped {
                        exits,
                        children_left,
                    }
                } else {
                    match Sig::from_number(number) {
                        Some(sig) => Event::Signal(sig),
                        None => continue,
                    }
                };
                if events.send(event).is_err() {
                    return; // the supervisor has finished
                }
            }
        })?;
    Ok(())
}
