//! `IScriptServiceV2`: scripts that take simulated time.
//!
//! A script body is read like a small shell script: each `sleep N` (seconds,
//! fractions allowed) adds to its run time, each `echo text` becomes a log line, and
//! `exit N` sets its exit code. StartScript is idempotent per ticket, as Tentacle's is.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bson::Bson;
use octopoll_wire::contracts::script::{
    ProcessOutput, ProcessState, ScriptStatus, StartScript, CANCEL_SCRIPT, COMPLETE_SCRIPT,
    EXIT_CODE_CANCELLED, EXIT_CODE_UNKNOWN_TICKET, GET_STATUS, START_SCRIPT,
};
use octopoll_wire::message::field;
use octopoll_wire::{RequestMessage, ServerError};
use tokio::time::Instant;

use super::{method_not_found, CallResult};

pub(super) use octopoll_wire::contracts::script::SERVICE;

/// Tickets remembered per agent; the oldest is forgotten past this.
const MAX_TICKETS: usize = 256;

#[derive(Debug, Clone)]
struct Run {
    started: Instant,
    duration: Duration,
    exit_code: i32,
    lines: Vec<String>,
}

/// The script service of one agent.
#[derive(Debug)]
pub struct ScriptService {
    base_duration: Duration,
    runs: Mutex<(HashMap<String, Run>, VecDeque<String>)>,
}

impl ScriptService {
    /// A service adding `base_duration` to every script.
    pub fn new(base_duration: Duration) -> Self {
        Self {
            base_duration,
            runs: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub(super) async fn call(&self, request: &RequestMessage) -> CallResult {
        match request.method.as_str() {
            START_SCRIPT => {
                let command = StartScript::from_params(&request.params).ok_or_else(|| {
                    ServerError::thrown("StartScript takes a StartScriptCommandV2")
                })?;
                let run = self.start(&command);
                if let Some(wait) = command.wait_for_finish {
                    let remaining = run.duration.saturating_sub(run.started.elapsed());
                    tokio::time::sleep(remaining.min(wait)).await;
                }
                Ok((status(&command.ticket, Some(&run), 0).to_bson(), Vec::new()))
            }
            GET_STATUS => {
                let (ticket, last) = ticket_param(request)?;
                Ok((
                    status(&ticket, self.get(&ticket).as_ref(), last).to_bson(),
                    Vec::new(),
                ))
            }
            CANCEL_SCRIPT => {
                let (ticket, last) = ticket_param(request)?;
                let cancelled = self.cancel(&ticket);
                Ok((
                    status(&ticket, cancelled.as_ref(), last).to_bson(),
                    Vec::new(),
                ))
            }
            COMPLETE_SCRIPT => {
                let (ticket, _) = ticket_param(request)?;
                let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
                runs.0.remove(&ticket);
                Ok((Bson::Null, Vec::new()))
            }
            other => Err(method_not_found("ScriptServiceV2", other)),
        }
    }

    fn start(&self, command: &StartScript) -> Run {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = runs.0.get(&command.ticket) {
            return existing.clone();
        }
        let mut run = parse(&command.script_body);
        run.duration = run.duration.saturating_add(self.base_duration);
        runs.0.insert(command.ticket.clone(), run.clone());
        runs.1.push_back(command.ticket.clone());
        while runs.1.len() > MAX_TICKETS {
            if let Some(oldest) = runs.1.pop_front() {
                runs.0.remove(&oldest);
            }
        }
        run
    }

    /// Ends a running script now with Tentacle's cancelled exit code.
    fn cancel(&self, ticket: &str) -> Option<Run> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let run = runs.0.get_mut(ticket)?;
        if run.started.elapsed() < run.duration {
            // Keep only the lines written by now, then end the run here.
            let written = lines_written(run, run.started.elapsed());
            run.lines.truncate(written);
            run.duration = run.started.elapsed();
            run.exit_code = EXIT_CODE_CANCELLED;
        }
        Some(run.clone())
    }

    fn get(&self, ticket: &str) -> Option<Run> {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(ticket)
            .cloned()
    }
}

fn ticket_param(request: &RequestMessage) -> Result<(String, i64), ServerError> {
    let command = request.params.first().and_then(Bson::as_document);
    let ticket = command
        .and_then(|c| field(c, "Ticket"))
        .and_then(Bson::as_document)
        .and_then(|t| field(t, "TaskId"))
        .and_then(Bson::as_str)
        .ok_or_else(|| {
            ServerError::thrown(format!("{} takes a command with a Ticket", request.method))
        })?;
    let last = command
        .and_then(|c| field(c, "LastLogSequence"))
        .and_then(Bson::as_i64)
        .unwrap_or(0);
    Ok((ticket.to_owned(), last))
}

fn parse(body: &str) -> Run {
    let mut run = Run {
        started: Instant::now(),
        duration: Duration::ZERO,
        exit_code: 0,
        lines: Vec::new(),
    };
    for command in body.split([';', '\n']).map(str::trim) {
        let mut words = command.splitn(2, ' ');
        let (verb, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or("").trim(),
        );
        match verb {
            "sleep" => {
                if let Ok(secs) = rest.parse::<f64>() {
                    let step = Duration::try_from_secs_f64(secs).unwrap_or_default();
                    run.duration = run.duration.saturating_add(step);
                }
            }
            "echo" => run.lines.push(rest.trim_matches('"').to_owned()),
            "exit" => run.exit_code = rest.parse().unwrap_or(1),
            _ => {}
        }
    }
    run
}

/// Lines appear over the run: line k of n is written at k/n of its duration.
fn lines_written(run: &Run, elapsed: Duration) -> usize {
    let total = run.lines.len();
    if elapsed >= run.duration || total == 0 {
        return total;
    }
    let fraction = elapsed.as_secs_f64() / run.duration.as_secs_f64();
    ((fraction * total as f64) as usize).min(total)
}

fn status(ticket: &str, run: Option<&Run>, last_log_sequence: i64) -> ScriptStatus {
    let Some(run) = run else {
        return ScriptStatus {
            ticket: ticket.to_owned(),
            logs: Vec::new(),
            next_log_sequence: last_log_sequence,
            state: ProcessState::Complete,
            exit_code: EXIT_CODE_UNKNOWN_TICKET,
        };
    };
    let done = run.started.elapsed() >= run.duration;
    let written = lines_written(run, run.started.elapsed()) as u32;
    let now = bson::DateTime::now();
    let logs = run
        .lines
        .iter()
        .enumerate()
        .skip(usize::try_from(last_log_sequence.max(0)).unwrap_or(usize::MAX))
        .take((written as usize).saturating_sub(last_log_sequence.max(0) as usize))
        .map(|(_, text)| ProcessOutput {
            source: 0,
            occurred: now,
            text: text.clone(),
        })
        .collect::<Vec<_>>();
    ScriptStatus {
        ticket: ticket.to_owned(),
        next_log_sequence: last_log_sequence.max(0) + logs.len() as i64,
        logs,
        state: if done {
            ProcessState::Complete
        } else {
            ProcessState::Running
        },
        exit_code: if done { run.exit_code } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octopoll_wire::ServiceEndPoint;

    fn start(ticket: &str, body: &str, wait: Option<Duration>) -> RequestMessage {
        let command = StartScript {
            ticket: ticket.into(),
            script_body: body.into(),
            task_id: "ServerTasks-1".into(),
            wait_for_finish: wait,
        };
        RequestMessage::call(
            SERVICE,
            START_SCRIPT,
            command.params(),
            ServiceEndPoint::new("poll://a/", ""),
            1,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_script_and_reports_its_lines_and_exit_code() {
        let service = ScriptService::new(Duration::ZERO);
        let begun = Instant::now();
        let request = start(
            "t1",
            "echo one; sleep 2; echo two; exit 3",
            Some(Duration::from_secs(60)),
        );
        let (result, _) = service.call(&request).await.unwrap();
        assert_eq!(begun.elapsed(), Duration::from_secs(2));
        let status = ScriptStatus::from_bson(&result).unwrap();
        assert_eq!(status.state, ProcessState::Complete);
        assert_eq!(status.exit_code, 3);
        assert_eq!(status.next_log_sequence, 2);
        assert_eq!(status.logs[1].text, "two");
    }

    #[tokio::test(start_paused = true)]
    async fn start_is_idempotent_per_ticket_and_unknown_tickets_are_minus_45() {
        let service = ScriptService::new(Duration::from_secs(10));
        let (first, _) = service.call(&start("t", "echo a", None)).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        let (again, _) = service.call(&start("t", "echo a", None)).await.unwrap();
        let (a, b) = (
            ScriptStatus::from_bson(&first).unwrap(),
            ScriptStatus::from_bson(&again).unwrap(),
        );
        assert_eq!(
            (a.state, b.state),
            (ProcessState::Running, ProcessState::Running)
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        let (done, _) = service.call(&start("t", "echo a", None)).await.unwrap();
        assert_eq!(
            ScriptStatus::from_bson(&done).unwrap().state,
            ProcessState::Complete,
            "the first run, not a second"
        );
        assert_eq!(status("nope", None, 0).exit_code, -45);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_ends_a_running_script_with_minus_43_and_huge_sleeps_do_not_overflow() {
        let service = ScriptService::new(Duration::ZERO);
        service
            .call(&start("c", "sleep 1e19; sleep 1e19; echo never", None))
            .await
            .unwrap();
        let mut cancel = start("c", "", None);
        cancel.method = CANCEL_SCRIPT.into();
        cancel.params = vec![bson::Bson::Document(
            bson::doc! { "Ticket": { "TaskId": "c" }, "LastLogSequence": 0_i64 },
        )];
        let (result, _) = service.call(&cancel).await.unwrap();
        let status = ScriptStatus::from_bson(&result).unwrap();
        assert_eq!(
            (status.state, status.exit_code),
            (ProcessState::Complete, -43)
        );
    }
}
