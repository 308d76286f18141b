//! `medix_r1._native`: the thin PyO3 layer over medix-core.
//!
//! Only batches cross the boundary: each call validates and converts its inputs once, releases the GIL for
//! the work, and returns flat buffers (`bytearray`) that the Python side views as NumPy arrays without a copy.

use std::borrow::Cow;

use medix_core::{analyze, group_advantages, AdvantageError, Analysis, Groups, Mode, Scale};
use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple};

// The full module path makes the class picklable (pickle finds it as `medix_r1._native.MedixInputError`).
create_exception!(
    medix_r1._native,
    MedixInputError,
    PyValueError,
    "Bad input to a medix_r1 batch function; `arg` names the argument and `index` the item (None when the \
     error is not about one item)."
);

/// A MedixInputError carrying `arg` and `index` as attributes (instance attributes, so the default
/// exception pickling, `(type, args, __dict__)`, keeps them).
fn input_error(message: String, arg: Option<&str>, index: Option<usize>) -> PyErr {
    Python::attach(|py| {
        let build = || -> PyResult<PyErr> {
            let value = py.get_type::<MedixInputError>().call1((message.clone(),))?;
            value.setattr("arg", arg)?;
            value.setattr("index", index)?;
            Ok(PyErr::from_value(value))
        };
        build().unwrap_or_else(|e| e)
    })
}

fn parse_mode(mode: &str) -> PyResult<Mode> {
    Mode::parse(mode).ok_or_else(|| {
        input_error(
            format!("mode must be 'strict' or 'reference', got {mode:?}"),
            Some("mode"),
            None,
        )
    })
}

/// Borrows every item of a list/tuple of `str` as `&str`, naming the argument and index of any bad item.
fn borrow_strs<'py>(arg: &str, seq: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyString>>> {
    if seq.is_instance_of::<PyString>() || seq.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{arg} must be a list of str, not a single {}",
            seq.get_type().name()?
        )));
    }
    let items: Vec<Bound<'py, PyAny>> = if let Ok(list) = seq.cast::<PyList>() {
        list.iter().collect()
    } else if let Ok(tuple) = seq.cast::<PyTuple>() {
        tuple.iter().collect()
    } else {
        seq.try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!("{arg} must be a list of str, got {}", type_name(seq)))
            })?
            .collect::<PyResult<_>>()?
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            item.cast_into::<PyString>().map_err(|e| {
                PyTypeError::new_err(format!(
                    "{arg}[{i}] must be str, got {}",
                    type_name(e.into_inner().as_any())
                ))
            })
        })
        .collect()
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn as_strs<'a>(arg: &str, items: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.to_str().map_err(|_| {
                input_error(
                    format!("{arg}[{i}] is not valid Unicode (it contains a lone surrogate)"),
                    Some(arg),
                    Some(i),
                )
            })
        })
        .collect()
}

fn check_same_len(a: &str, na: usize, b: &str, nb: usize) -> PyResult<()> {
    if na == nb {
        Ok(())
    } else {
        Err(input_error(
            format!("{a} and {b} must have the same length, got {na} and {nb}"),
            Some(b),
            None,
        ))
    }
}

fn f64_buffer<'py>(py: Python<'py>, values: &[f64]) -> PyResult<Bound<'py, PyByteArray>> {
    Ok(PyByteArray::new(py, bytemuck::cast_slice(values)))
}

fn bool_buffer<'py>(py: Python<'py>, values: impl Iterator<Item = bool>) -> Bound<'py, PyByteArray> {
    let bytes: Vec<u8> = values.map(u8::from).collect();
    PyByteArray::new(py, &bytes)
}

/// Views a native-endian float64 buffer without copying when it is aligned (a `bytes` payload always is).
fn f64s_from_bytes<'a>(arg: &str, raw: &'a [u8]) -> PyResult<Cow<'a, [f64]>> {
    if raw.len() % 8 != 0 {
        return Err(input_error(
            format!("{arg}: buffer length {} is not a multiple of 8", raw.len()),
            Some(arg),
            None,
        ));
    }
    Ok(match bytemuck::try_cast_slice::<u8, f64>(raw) {
        Ok(view) => Cow::Borrowed(view),
        Err(_) => Cow::Owned(
            raw.chunks_exact(8)
                .map(|c| f64::from_ne_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
    })
}

/// Reads the list of str `seq` (argument `arg`) once, then maps `each` over its items with the GIL released.
fn map_strs<'py, T: Send>(
    py: Python<'py>,
    arg: &str,
    seq: &Bound<'py, PyAny>,
    each: impl Fn(&str) -> T + Sync,
) -> PyResult<Vec<T>> {
    let owned = borrow_strs(arg, seq)?;
    let texts = as_strs(arg, &owned)?;
    Ok(py.detach(|| texts.iter().map(|t| each(t)).collect()))
}

/// Like [`map_strs`] over `responses` paired with `ground_truths` (of the same length) when given.
fn map_str_pairs<'py, T: Send>(
    py: Python<'py>,
    responses: &Bound<'py, PyAny>,
    ground_truths: Option<&Bound<'py, PyAny>>,
    each: impl Fn(&str, Option<&str>) -> T + Sync,
) -> PyResult<Vec<T>> {
    let r_owned = borrow_strs("responses", responses)?;
    let g_owned = ground_truths
        .map(|g| borrow_strs("ground_truths", g))
        .transpose()?;
    if let Some(g) = &g_owned {
        check_same_len("responses", r_owned.len(), "ground_truths", g.len())?;
    }
    let texts = as_strs("responses", &r_owned)?;
    let gts = g_owned
        .as_deref()
        .map(|g| as_strs("ground_truths", g))
        .transpose()?;
    Ok(py.detach(|| {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| each(t, gts.as_ref().map(|g| g[i])))
            .collect()
    }))
}

/// Declares `#[pyfunction] NAME(ARG, mode="strict")`: `each(text, mode)` of medix-core on every str of the
/// list ARG with the GIL released ([`map_strs`]), the results handed to `emit` (a Python object).
macro_rules! per_text_function {
    ($(#[$doc:meta])* $name:ident($arg:ident) -> $out:ty, each: $each:expr, emit: $emit:expr) => {
        $(#[$doc])*
        #[pyfunction]
        #[pyo3(signature = ($arg, mode = "strict"))]
        fn $name<'py>(py: Python<'py>, $arg: &Bound<'py, PyAny>, mode: &str) -> PyResult<Bound<'py, $out>> {
            let mode = parse_mode(mode)?;
            let out = map_strs(py, stringify!($arg), $arg, |t| ($each)(t, mode))?;
            ($emit)(py, out)
        }
    };
}

per_text_function!(
    /// format_rewards(responses, mode) -> bytearray of float64
    format_rewards(responses) -> PyByteArray,
    each: medix_core::format_reward,
    emit: |py, out: Vec<f64>| f64_buffer(py, &out)
);

per_text_function!(
    /// extract_answers(responses, mode) -> list[str]
    extract_answers(responses) -> PyList,
    each: |t, mode| medix_core::extract_answer(t, mode).into_owned(),
    emit: |py, out: Vec<String>| PyList::new(py, out.iter().map(|a| PyString::new(py, a)))
);

per_text_function!(
    /// is_invalid_answers(answers, mode) -> bytearray of bool (0/1)
    is_invalid_answers(answers) -> PyByteArray,
    each: medix_core::is_invalid_answer,
    emit: |py, out: Vec<bool>| Ok(bool_buffer(py, out.into_iter()))
);

/// modality_rewards(responses, ground_truths, mode) -> bytearray of float64 (NaN = not applicable)
#[pyfunction]
#[pyo3(signature = (responses, ground_truths, mode = "strict"))]
fn modality_rewards<'py>(
    py: Python<'py>,
    responses: &Bound<'py, PyAny>,
    ground_truths: &Bound<'py, PyAny>,
    mode: &str,
) -> PyResult<Bound<'py, PyByteArray>> {
    let mode = parse_mode(mode)?;
    let out = map_str_pairs(py, responses, Some(ground_truths), |t, g| {
        medix_core::modality_reward(t, g.unwrap_or_default(), mode)
    })?;
    f64_buffer(py, &out)
}

/// parse_ground_truths(ground_truths) -> list[tuple[str | None, str]]
#[pyfunction]
fn parse_ground_truths<'py>(
    py: Python<'py>,
    ground_truths: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let parsed = map_strs(py, "ground_truths", ground_truths, |g| {
        let (tag, text) = medix_core::parse_ground_truth(g);
        (tag, text.to_owned())
    })?;
    let items = parsed
        .iter()
        .map(|(tag, text)| (tag.map(|t| PyString::new(py, t)), PyString::new(py, text)).into_pyobject(py))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// analyze(responses, ground_truths | None, mode) -> (format f64, modality f64, answers list[str], invalid bool)
///
/// Everything the composite reward needs in one crossing.
#[pyfunction]
#[pyo3(signature = (responses, ground_truths = None, mode = "strict"))]
fn analyze_batch<'py>(
    py: Python<'py>,
    responses: &Bound<'py, PyAny>,
    ground_truths: Option<&Bound<'py, PyAny>>,
    mode: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    let mode = parse_mode(mode)?;
    let out: Vec<Analysis> = map_str_pairs(py, responses, ground_truths, |t, g| analyze(t, g, mode))?;
    let format: Vec<f64> = out.iter().map(|a| a.format).collect();
    let modality: Vec<f64> = out.iter().map(|a| a.modality).collect();
    let answers = PyList::new(py, out.iter().map(|a| PyString::new(py, &a.answer)))?;
    let invalid = bool_buffer(py, out.iter().map(|a| a.invalid));
    PyTuple::new(
        py,
        [
            f64_buffer(py, &format)?.into_any(),
            f64_buffer(py, &modality)?.into_any(),
            answers.into_any(),
            invalid.into_any(),
        ],
    )
}

fn advantage_error(e: &AdvantageError) -> PyErr {
    let (arg, index) = match e {
        AdvantageError::ZeroGroupSize | AdvantageError::NotDivisible { .. } => ("group_size", None),
        AdvantageError::IdsLength { .. } => ("group_ids", None),
        AdvantageError::Infinite { index, .. } => ("rewards", Some(*index)),
        AdvantageError::NegativeEps(_) => ("eps", None),
    };
    input_error(e.to_string(), Some(arg), index)
}

/// group_advantages(rewards_f64_bytes, group_size, group_ids_i64_bytes, scale, eps, with_stats)
///
/// Returns the advantages as a float64 bytearray, or with `with_stats` a tuple of buffers:
/// (advantages f64, group index per sample f64, mean f64, std f64, valid count f64, degenerate u8).
#[pyfunction]
#[pyo3(signature = (rewards, group_size = None, group_ids = None, scale = "group", eps = 1e-6, with_stats = false))]
fn group_advantages_raw<'py>(
    py: Python<'py>,
    rewards: &[u8],
    group_size: Option<usize>,
    group_ids: Option<&[u8]>,
    scale: &str,
    eps: f64,
    with_stats: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let scale_v = Scale::parse(scale).ok_or_else(|| {
        input_error(
            format!("scale must be 'group', 'batch' or 'none', got {scale:?}"),
            Some("scale"),
            None,
        )
    })?;
    let r = f64s_from_bytes("rewards", rewards)?;
    let ids: Option<Vec<i64>> = match group_ids {
        Some(raw) if raw.len() % 8 == 0 => Some(
            raw.chunks_exact(8)
                .map(|c| i64::from_ne_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
        Some(_) => {
            return Err(input_error(
                "group_ids: buffer length is not a multiple of 8".to_owned(),
                Some("group_ids"),
                None,
            ))
        }
        None => None,
    };
    let groups = match (group_size, &ids) {
        (Some(_), Some(_)) => {
            return Err(input_error(
                "give either group_size or group_ids, not both".to_owned(),
                None,
                None,
            ))
        }
        (Some(g), None) => Groups::Size(g),
        (None, Some(ids)) => Groups::Ids(ids),
        (None, None) => {
            return Err(input_error(
                "give group_size (consecutive groups) or group_ids (one id per reward)".to_owned(),
                None,
                None,
            ))
        }
    };
    let out = py
        .detach(|| group_advantages(&r, groups, scale_v, eps))
        .map_err(|e| advantage_error(&e))?;
    let adv = f64_buffer(py, &out.advantages)?;
    if !with_stats {
        return Ok(adv.into_any());
    }
    let s = &out.stats;
    let group_of: Vec<f64> = match group_size {
        Some(g) => (0..r.len()).map(|i| (i / g) as f64).collect(),
        None => s.group_of.iter().map(|&g| f64::from(g)).collect(),
    };
    let count: Vec<f64> = s.count.iter().map(|&c| f64::from(c)).collect();
    Ok(PyTuple::new(
        py,
        [
            adv.into_any(),
            f64_buffer(py, &group_of)?.into_any(),
            f64_buffer(py, &s.mean)?.into_any(),
            f64_buffer(py, &s.std)?.into_any(),
            f64_buffer(py, &count)?.into_any(),
            bool_buffer(py, s.degenerate.iter().copied()).into_any(),
        ],
    )?
    .into_any())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let err_type = m.py().get_type::<MedixInputError>();
    // Class-level defaults: an instance made in Python (`MedixInputError("msg")`) has them too.
    err_type.setattr("arg", m.py().None())?;
    err_type.setattr("index", m.py().None())?;
    m.add("MedixInputError", err_type)?;
    m.add("MODALITY_TAGS", PyTuple::new(m.py(), medix_core::MODALITY_TAGS)?)?;
    m.add_function(wrap_pyfunction!(format_rewards, m)?)?;
    m.add_function(wrap_pyfunction!(modality_rewards, m)?)?;
    m.add_function(wrap_pyfunction!(extract_answers, m)?)?;
    m.add_function(wrap_pyfunction!(parse_ground_truths, m)?)?;
    m.add_function(wrap_pyfunction!(is_invalid_answers, m)?)?;
    m.add_function(wrap_pyfunction!(analyze_batch, m)?)?;
    m.add_function(wrap_pyfunction!(group_advantages_raw, m)?)?;
    Ok(())
}
