//! A pickle reader that understands only what a PyTorch state dict needs.
//!
//! Nothing is ever executed: `GLOBAL`/`REDUCE`/`NEWOBJ`/`BUILD` of anything but torch's
//! tensor rebuilds and `OrderedDict` produce an opaque value (this is how the
//! `argparse.Namespace` under `args`, optimizer state and AMP scaler of official training
//! checkpoints are skipped). Unknown opcodes are errors.

use std::collections::HashMap;

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn from_storage(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
}

/// A tensor as the pickle describes it: a view into a storage record of the archive.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: String,
    pub dtype: DType,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage {
        key: String,
        dtype: DType,
    },
    Tensor(TensorRef),
    /// An object of a class we do not rebuild; its name is kept for messages.
    Opaque(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// Looks up a string key of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Bounds that keep a hostile file from exhausting memory through the pickle alone.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;
const MAX_DIMS: usize = 16;
/// Memo reads and writes copy values; a few bytes of `BINGET`s can ask to copy a list that
/// holds itself twice, over and over (a "billion laughs"). Copies are budgeted in nodes.
const MAX_COPIED: usize = 1 << 24;

/// Nodes in `v` (strings and byte strings count one per 16 bytes), counting stops past `limit`.
fn weight(v: &Value, limit: usize) -> usize {
    let mut n = 1;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        if n > limit {
            break;
        }
        match v {
            Value::Str(s) => n += s.len() / 16,
            Value::Bytes(b) => n += b.len() / 16,
            Value::Tuple(items) | Value::List(items) => {
                n += items.len();
                todo.extend(items);
            }
            Value::Dict(items) => {
                n += 2 * items.len();
                todo.extend(items.iter().flat_map(|(k, v)| [k, v]));
            }
            _ => {}
        }
    }
    n
}

enum Item {
    V(Value),
    Mark,
}

pub fn parse(data: &[u8]) -> Result<Value, String> {
    Parser {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    }
    .run()
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
    /// Nodes copied through the memo so far.
    copied: usize,
}

impl Parser<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn len(&mut self, n: u64) -> Result<usize, String> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.data.len() - self.pos)
            .ok_or_else(|| format!("pickle declares {n} bytes past its end"))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated in a text field")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err("pickle stack too deep".into());
        }
        self.stack.push(Item::V(v));
        Ok(())
    }
    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => Err("pickle: unexpected mark".into()),
            None => Err("pickle: stack underflow".into()),
        }
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Item::V(v)) => Ok(v),
            _ => Err("pickle: stack underflow".into()),
        }
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::V(v)) => items.push(v),
                Some(Item::Mark) => break,
                None => return Err("pickle: missing mark".into()),
            }
        }
        items.reverse();
        Ok(items)
    }
    fn memoize(&mut self, idx: u32) -> Result<(), String> {
        if self.memo.len() >= MAX_MEMO {
            return Err("pickle memo too large".into());
        }
        let w = match self.stack.last() {
            Some(Item::V(v)) => weight(v, MAX_COPIED),
            _ => return Err("pickle: memoize on empty stack".into()),
        };
        self.charge(w)?;
        if let Some(Item::V(v)) = self.stack.last() {
            let v = v.clone();
            self.memo.insert(idx, v);
        }
        Ok(())
    }
    fn get(&mut self, idx: u32) -> Result<(), String> {
        let w = self
            .memo
            .get(&idx)
            .map(|v| weight(v, MAX_COPIED))
            .ok_or_else(|| format!("pickle: memo {idx} not set"))?;
        self.charge(w)?;
        let v = self.memo[&idx].clone();
        self.push(v)
    }
    fn charge(&mut self, nodes: usize) -> Result<(), String> {
        self.copied = self.copied.saturating_add(nodes);
        if self.copied > MAX_COPIED {
            return Err("pickle: memo copies exceed the budget (a self-amplifying pickle?)".into());
        }
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                } // PROTO
                0x95 => {
                    self.u64()?;
                } // FRAME
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4"));
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2"));
                    self.push(Value::Int(v as i64))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len(n)?;
                    let bytes = self.take(n)?;
                    // Little-endian two's complement; values beyond i64 become opaque.
                    let v = if n <= 8 {
                        let mut buf = [if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                            0xff
                        } else {
                            0
                        }; 8];
                        buf[..n].copy_from_slice(bytes);
                        Value::Int(i64::from_le_bytes(buf))
                    } else {
                        Value::Opaque("long".into())
                    };
                    self.push(v)?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                    self.push(Value::Float(v))?
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let n = match op {
                        0x8c | b'U' => self.u8()? as u64,
                        0x8d => self.u64()?,
                        _ => self.u32()? as u64,
                    };
                    let n = self.len(n)?;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?
                }
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => self.u8()? as u64,
                        b'B' => self.u32()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                0x8f => self.push(Value::List(Vec::new()))?, // EMPTY_SET
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push(Value::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items)?;
                    self.push(Value::Dict(dict))?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                } // FROZENSET
                b'a' => {
                    let v = self.pop()?;
                    if let Value::List(l) = self.top()? {
                        l.push(v)
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.extend(items)
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Value::Dict(d) = self.top()? {
                        d.push((k, v))
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items)?;
                    if let Value::Dict(d) = self.top()? {
                        d.extend(new)
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memoize(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memoize(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memoize(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.get(i)?
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(module, name))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n))?,
                        _ => return Err("pickle: STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Value::Opaque(global_name(&cls)))?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(Value::Opaque(global_name(&cls)))?
                }
                b'b' => {
                    // BUILD sets an object's state; we keep dicts as they are and never call
                    // __setstate__.
                    let _state = self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent(pid)?;
                    self.push(v)?
                }
                _ => {
                    return Err(format!(
                        "pickle: unsupported opcode 0x{op:02x} at byte {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("pickle: odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn global_name(v: &Value) -> String {
    match v {
        Value::Global(m, n) => format!("{m}.{n}"),
        _ => "object".into(),
    }
}

fn usize_list(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = match v {
        Value::Tuple(t) | Value::List(t) => t,
        _ => return Err(format!("pickle: tensor {what} is not a tuple")),
    };
    if items.len() > MAX_DIMS {
        return Err(format!("pickle: tensor has {} dimensions", items.len()));
    }
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => Err(format!("pickle: tensor {what} holds a non-integer")),
        })
        .collect()
}

/// The only callables we honour. Everything else becomes an opaque value.
fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = &func else {
        return Ok(Value::Opaque("call".into()));
    };
    let args = match args {
        Value::Tuple(a) => a,
        _ => return Ok(Value::Opaque(global_name(&func))),
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err("pickle: tensor rebuild with too few arguments".into());
            };
            let Value::Storage { key, dtype } = storage else {
                return Err("pickle: tensor rebuild without a storage".into());
            };
            let Value::Int(offset) = offset else {
                return Err("pickle: tensor offset is not an integer".into());
            };
            let shape = usize_list(size, "size")?;
            let stride = usize_list(stride, "stride")?;
            if shape.len() != stride.len() || *offset < 0 {
                return Err("pickle: tensor size and stride disagree".into());
            }
            Ok(Value::Tensor(TensorRef {
                storage: key.clone(),
                dtype: *dtype,
                offset: *offset as usize,
                shape,
                stride,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Ok(args.into_iter().next().unwrap_or(Value::None))
        }
        ("collections", "OrderedDict") => match args.into_iter().next() {
            Some(Value::List(items)) => Ok(Value::Dict(
                items
                    .into_iter()
                    .filter_map(|p| match p {
                        Value::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.pop()?;
                            Some((kv.pop()?, v))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            _ => Ok(Value::Dict(Vec::new())),
        },
        _ => Ok(Value::Opaque(global_name(&func))),
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)` → a storage reference.
fn persistent(pid: Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err("pickle: persistent id is not a tuple".into());
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(_, cls), key, ..] if tag == "storage" => {
            let dtype = DType::from_storage(cls).ok_or_else(|| format!("unsupported storage type {cls}"))?;
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => return Err("pickle: storage key is not a string".into()),
            };
            Ok(Value::Storage { key, dtype })
        }
        _ => Err("pickle: unknown persistent id".into()),
    }
}
