//! `IScriptServiceV2`: start a script, poll its status, complete it.

use std::time::Duration;

use bson::{doc, Bson, Document};

use super::contract_type;
use crate::bson::{timespan, timespan_from};
use crate::message::field;

/// The contract's interface name.
pub const SERVICE: &str = "IScriptServiceV2";
/// Starts a script (idempotent per ticket).
pub const START_SCRIPT: &str = "StartScript";
/// Reads status and new log lines.
pub const GET_STATUS: &str = "GetStatus";
/// Cancels a running script (exit code -43).
pub const CANCEL_SCRIPT: &str = "CancelScript";
/// Forgets a finished ticket.
pub const COMPLETE_SCRIPT: &str = "CompleteScript";

const NAMESPACE: &str = "ScriptServiceV2.";

/// Where a script is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// Accepted, not running yet.
    Pending = 0,
    /// Running.
    Running = 1,
    /// Finished; `exit_code` is final.
    Complete = 2,
}

/// The exit code of a ticket that never started.
pub const EXIT_CODE_UNKNOWN_TICKET: i32 = -45;
/// The exit code of a cancelled script.
pub const EXIT_CODE_CANCELLED: i32 = -43;

/// `StartScriptCommandV2`, with the fields octopoll's agent acts on.
#[derive(Clone, Debug, PartialEq)]
pub struct StartScript {
    /// The server's ticket; a repeat with the same ticket never runs twice.
    pub ticket: String,
    /// The script text.
    pub script_body: String,
    /// The server task id.
    pub task_id: String,
    /// Answer when the script ends or this passes, whichever first.
    pub wait_for_finish: Option<Duration>,
}

impl StartScript {
    /// The params of `StartScript(command)`.
    pub fn params(&self) -> Vec<Bson> {
        let command = doc! {
            "$type": contract_type(NAMESPACE, "StartScriptCommandV2"),
            "ScriptTicket": { "TaskId": self.ticket.as_str() },
            "ScriptBody": self.script_body.as_str(),
            "TaskId": self.task_id.as_str(),
            "DurationToWaitForScriptToFinish": self.wait_for_finish.map(|d| Bson::String(timespan(d))).unwrap_or(Bson::Null),
            "Isolation": 0,
            "ScriptIsolationMutexTimeout": timespan(Duration::from_secs(i32::MAX as u64)),
            "IsolationMutexName": Bson::Null,
            "Scripts": Document::new(),
            "Files": Vec::<Bson>::new(),
            "Arguments": Vec::<Bson>::new(),
        };
        vec![Bson::Document(command)]
    }

    /// Reads the command from `StartScript`'s params.
    pub fn from_params(params: &[Bson]) -> Option<Self> {
        let command = params.first()?.as_document()?;
        Some(Self {
            ticket: ticket_of(field(command, "ScriptTicket")?)?,
            script_body: field(command, "ScriptBody")?.as_str()?.to_owned(),
            task_id: field(command, "TaskId")
                .and_then(Bson::as_str)
                .unwrap_or_default()
                .to_owned(),
            wait_for_finish: field(command, "DurationToWaitForScriptToFinish")
                .and_then(Bson::as_str)
                .and_then(timespan_from),
        })
    }
}

/// One log line of a script.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessOutput {
    /// 0 StdOut, 1 StdErr, 2 Debug.
    pub source: i32,
    /// When it was written.
    pub occurred: bson::DateTime,
    /// The text.
    pub text: String,
}

/// `ScriptStatusResponseV2`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScriptStatus {
    /// The ticket.
    pub ticket: String,
    /// Log lines above the asked sequence.
    pub logs: Vec<ProcessOutput>,
    /// The last log line's number.
    pub next_log_sequence: i64,
    /// Pending, running or complete.
    pub state: ProcessState,
    /// 0 while running.
    pub exit_code: i32,
}

impl ScriptStatus {
    /// The result in wire form.
    pub fn to_bson(&self) -> Bson {
        let logs: Vec<Bson> = self
            .logs
            .iter()
            .map(|l| {
                Bson::Document(
                    doc! { "Source": l.source, "Occurred": l.occurred, "Text": l.text.as_str() },
                )
            })
            .collect();
        Bson::Document(doc! {
            "$type": contract_type(NAMESPACE, "ScriptStatusResponseV2"),
            "Ticket": { "TaskId": self.ticket.as_str() },
            "Logs": logs,
            "NextLogSequence": self.next_log_sequence,
            "State": self.state as i32,
            "ExitCode": self.exit_code,
        })
    }

    /// Reads a status result.
    pub fn from_bson(value: &Bson) -> Option<Self> {
        let doc = value.as_document()?;
        let state = match field(doc, "State")?.as_i32()? {
            0 => ProcessState::Pending,
            1 => ProcessState::Running,
            2 => ProcessState::Complete,
            _ => return None,
        };
        let logs = field(doc, "Logs")?
            .as_array()?
            .iter()
            .map(|line| {
                let line = line.as_document()?;
                Some(ProcessOutput {
                    source: field(line, "Source")?.as_i32()?,
                    occurred: *field(line, "Occurred")?.as_datetime()?,
                    text: field(line, "Text")?.as_str()?.to_owned(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            ticket: ticket_of(field(doc, "Ticket")?)?,
            logs,
            next_log_sequence: field(doc, "NextLogSequence")?.as_i64()?,
            state,
            exit_code: field(doc, "ExitCode")?.as_i32()?,
        })
    }
}

fn ticket_of(value: &Bson) -> Option<String> {
    field(value.as_document()?, "TaskId")?
        .as_str()
        .map(str::to_owned)
}
