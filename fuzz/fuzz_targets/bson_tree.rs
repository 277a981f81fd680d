//! Structure-aware: BSON written by hand from a flat list of operations (open a
//! document, an array or a code-with-scope, close one, add a value of any of
//! the 21 element types, add a chain of up to 20,000 nested documents), so the
//! input describes trees of any depth without the generator itself recursing.
//! The tree is read as a response's result, where a peer's answer puts it.
//! Never panics or overflows the stack; what decodes is within the depth limit
//! and holds only the types Halibut writes.
#![no_main]

use bson::Bson;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use octopoll_wire::message::{MAX_DEPTH, RESPONSE_TYPE};
use octopoll_wire::Envelope;

#[derive(Arbitrary, Debug)]
enum Op {
    Open(Container),
    Close,
    Add(Scalar),
    /// A chain of this many documents (or code-with-scope values), each the only
    /// field of the one around it.
    Nest(u16, bool),
}

#[derive(Arbitrary, Debug)]
enum Container {
    Document,
    Array,
    CodeWithScope(String),
}

#[derive(Arbitrary, Debug)]
enum Scalar {
    Double(f64),
    String(String),
    Binary(u8, Vec<u8>),
    Undefined,
    ObjectId([u8; 12]),
    Boolean(bool),
    DateTime(i64),
    Null,
    Regex(String, String),
    DbPointer(String, [u8; 12]),
    Code(String),
    Symbol(String),
    Int32(i32),
    Timestamp(u64),
    Int64(i64),
    Decimal128([u8; 16]),
    MinKey,
    MaxKey,
}

/// An open container: where its length goes, where its code-with-scope total
/// goes (if it is one), and the next array index.
struct Open {
    start: usize,
    scope_start: Option<usize>,
    index: Option<usize>,
}

struct Writer {
    out: Vec<u8>,
    open: Vec<Open>,
}

impl Writer {
    fn cstring(&mut self, text: &str) {
        self.out.extend(text.bytes().filter(|b| *b != 0));
        self.out.push(0);
    }

    fn string(&mut self, text: &str) {
        self.out
            .extend_from_slice(&((text.len() + 1) as i32).to_le_bytes());
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(0);
    }

    /// The element header for `kind` in the innermost container.
    fn key(&mut self, kind: u8) {
        self.out.push(kind);
        let top = self.open.last_mut().expect("the root stays open");
        let key = match &mut top.index {
            Some(i) => {
                *i += 1;
                (*i - 1).to_string()
            }
            None => format!("k{}", self.out.len()),
        };
        self.cstring(&key);
    }

    fn open(&mut self, kind: u8, scope_code: Option<&str>, array: bool) {
        self.key(kind);
        let scope_start = scope_code.map(|code| {
            let at = self.out.len();
            self.out.extend_from_slice(&[0; 4]);
            self.string(code);
            at
        });
        self.push_open(scope_start, array);
    }

    /// Opens a document under a fixed `header` (type byte, key, NUL).
    fn open_named(&mut self, header: &[u8]) {
        self.out.extend_from_slice(header);
        self.push_open(None, false);
    }

    /// Leaves room for a container's length and remembers where it goes.
    fn push_open(&mut self, scope_start: Option<usize>, array: bool) {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        self.open.push(Open {
            start,
            scope_start,
            index: array.then_some(0),
        });
    }

    fn close(&mut self) {
        let Some(open) = self.open.pop() else { return };
        self.out.push(0);
        let patch = |out: &mut Vec<u8>, at: usize| {
            let len = (out.len() - at) as i32;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        };
        patch(&mut self.out, open.start);
        if let Some(at) = open.scope_start {
            patch(&mut self.out, at);
        }
    }

    fn add(&mut self, scalar: &Scalar) {
        match scalar {
            Scalar::Double(v) => {
                self.key(0x01);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Scalar::String(v) => {
                self.key(0x02);
                self.string(v);
            }
            Scalar::Binary(subtype, bytes) => {
                self.key(0x05);
                self.out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
                self.out.push(*subtype);
                self.out.extend_from_slice(bytes);
            }
            Scalar::Undefined => self.key(0x06),
            Scalar::ObjectId(id) => {
                self.key(0x07);
                self.out.extend_from_slice(id);
            }
            Scalar::Boolean(v) => {
                self.key(0x08);
                self.out.push(u8::from(*v));
            }
            Scalar::DateTime(v) => {
                self.key(0x09);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Scalar::Null => self.key(0x0A),
            Scalar::Regex(pattern, options) => {
                self.key(0x0B);
                self.cstring(pattern);
                self.cstring(options);
            }
            Scalar::DbPointer(name, id) => {
                self.key(0x0C);
                self.string(name);
                self.out.extend_from_slice(id);
            }
            Scalar::Code(code) => {
                self.key(0x0D);
                self.string(code);
            }
            Scalar::Symbol(symbol) => {
                self.key(0x0E);
                self.string(symbol);
            }
            Scalar::Int32(v) => {
                self.key(0x10);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Scalar::Timestamp(v) => {
                self.key(0x11);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Scalar::Int64(v) => {
                self.key(0x12);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Scalar::Decimal128(v) => {
                self.key(0x13);
                self.out.extend_from_slice(v);
            }
            Scalar::MinKey => self.key(0xFF),
            Scalar::MaxKey => self.key(0x7F),
        }
    }
}

/// The response envelope whose result is the tree `ops` describe.
fn response(ops: &[Op]) -> Vec<u8> {
    let root = Open {
        start: 0,
        scope_start: None,
        index: None,
    };
    let mut writer = Writer {
        out: vec![0; 4],
        open: vec![root],
    };
    // { Message: { $type, id, result: { …ops… } } }
    writer.open_named(b"\x03Message\0");
    writer.out.extend_from_slice(b"\x02$type\0");
    writer.string(RESPONSE_TYPE);
    writer.out.extend_from_slice(b"\x02id\0");
    writer.string("x");
    writer.open_named(b"\x03result\0");
    let floor = writer.open.len();
    for op in ops {
        match op {
            Op::Open(Container::Document) => writer.open(0x03, None, false),
            Op::Open(Container::Array) => writer.open(0x04, None, true),
            Op::Open(Container::CodeWithScope(code)) => writer.open(0x0F, Some(code), false),
            Op::Close if writer.open.len() > floor => writer.close(),
            Op::Close => {}
            Op::Add(scalar) => writer.add(scalar),
            Op::Nest(depth, scope) => {
                for _ in 0..(*depth % 20_000) {
                    let code = scope.then_some("x");
                    writer.open(if *scope { 0x0F } else { 0x03 }, code, false);
                }
            }
        }
    }
    while !writer.open.is_empty() {
        writer.close();
    }
    writer.out
}

/// The deepest nesting of documents and arrays in `value` (a scalar is 0).
fn depth(value: &Bson) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, at)) = stack.pop() {
        match value {
            Bson::Document(d) => stack.extend(d.values().map(|v| (v, at + 1))),
            Bson::Array(a) => stack.extend(a.iter().map(|v| (v, at + 1))),
            _ => deepest = deepest.max(at),
        }
        deepest = deepest.max(at);
    }
    deepest
}

/// Whether `value` holds only the types Halibut writes.
fn halibut_types(value: &Bson) -> bool {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Bson::Document(d) => stack.extend(d.values()),
            Bson::Array(a) => stack.extend(a.iter()),
            Bson::Double(_)
            | Bson::String(_)
            | Bson::Binary(_)
            | Bson::ObjectId(_)
            | Bson::Boolean(_)
            | Bson::DateTime(_)
            | Bson::Null
            | Bson::Int32(_)
            | Bson::Int64(_) => {}
            _ => return false,
        }
    }
    true
}

fuzz_target!(|ops: Vec<Op>| {
    let bytes = response(&ops);
    if let Ok(Envelope::Response(response)) = Envelope::from_bson_bytes(&bytes) {
        // The root (1) and Message (2) hold the result.
        assert!(depth(&response.result) + 2 <= MAX_DEPTH, "the depth limit held");
        assert!(halibut_types(&response.result), "only Halibut's types decode");
    }
});
