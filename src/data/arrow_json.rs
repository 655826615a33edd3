//! Arrow columns → JSON values, so Parquet rows go through the same shape code as JSON rows.
//! Conversion is column-wise (each nested child array is converted once, then sliced).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Map, Number, Value};

/// Converts every row of `batch` into a JSON object keyed by column name.
pub fn batch_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>, String> {
    let schema = batch.schema();
    let mut rows = vec![Map::new(); batch.num_rows()];
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        let values = column_values(col.as_ref()).map_err(|e| format!("column `{}`: {e}", field.name()))?;
        for (row, v) in rows.iter_mut().zip(values) {
            row.insert(field.name().clone(), v);
        }
    }
    Ok(rows)
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

fn prim<T, F>(arr: &dyn Array, f: F) -> Vec<Value>
where
    T: arrow_array::ArrowPrimitiveType,
    F: Fn(T::Native) -> Value,
{
    let a = arr.as_primitive::<T>();
    (0..a.len()).map(|i| if a.is_null(i) { Value::Null } else { f(a.value(i)) }).collect()
}

fn list<O: OffsetSizeTrait>(arr: &dyn Array) -> Result<Vec<Value>, String> {
    let a = arr.as_list::<O>();
    let child = column_values(a.values().as_ref())?;
    let offsets = a.value_offsets();
    Ok((0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return Value::Null;
            }
            let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
            Value::Array(child.get(s..e).map(|x| x.to_vec()).unwrap_or_default())
        })
        .collect())
}

/// Converts one column to JSON values, one per row.
pub fn column_values(arr: &dyn Array) -> Result<Vec<Value>, String> {
    let n = arr.len();
    let out = match arr.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => {
            let a = arr.as_boolean();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::Bool(a.value(i)) }).collect()
        }
        DataType::Int8 => prim::<Int8Type, _>(arr, Value::from),
        DataType::Int16 => prim::<Int16Type, _>(arr, Value::from),
        DataType::Int32 => prim::<Int32Type, _>(arr, Value::from),
        DataType::Int64 => prim::<Int64Type, _>(arr, Value::from),
        DataType::UInt8 => prim::<UInt8Type, _>(arr, Value::from),
        DataType::UInt16 => prim::<UInt16Type, _>(arr, Value::from),
        DataType::UInt32 => prim::<UInt32Type, _>(arr, Value::from),
        DataType::UInt64 => prim::<UInt64Type, _>(arr, Value::from),
        DataType::Float16 => prim::<Float16Type, _>(arr, |x| float(x.to_f64())),
        DataType::Float32 => prim::<Float32Type, _>(arr, |x| float(x as f64)),
        DataType::Float64 => prim::<Float64Type, _>(arr, float),
        DataType::Utf8 => {
            let a = arr.as_string::<i32>();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::from(a.value(i)) }).collect()
        }
        DataType::LargeUtf8 => {
            let a = arr.as_string::<i64>();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::from(a.value(i)) }).collect()
        }
        DataType::Utf8View => {
            let a = arr.as_string_view();
            (0..n).map(|i| if a.is_null(i) { Value::Null } else { Value::from(a.value(i)) }).collect()
        }
        DataType::List(_) => list::<i32>(arr)?,
        DataType::LargeList(_) => list::<i64>(arr)?,
        DataType::FixedSizeList(_, size) => {
            let a = arr.as_fixed_size_list();
            let child = column_values(a.values().as_ref())?;
            let size = (*size).max(0) as usize;
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Array(child.get(i * size..(i + 1) * size).map(|x| x.to_vec()).unwrap_or_default())
                    }
                })
                .collect()
        }
        DataType::Struct(fields) => {
            let a = arr.as_struct();
            let children: Vec<Vec<Value>> =
                a.columns().iter().map(|c: &ArrayRef| column_values(c.as_ref())).collect::<Result<_, _>>()?;
            (0..n)
                .map(|i| {
                    if a.is_null(i) {
                        return Value::Null;
                    }
                    let mut m = Map::new();
                    for (f, c) in fields.iter().zip(&children) {
                        m.insert(f.name().clone(), c.get(i).cloned().unwrap_or(Value::Null));
                    }
                    Value::Object(m)
                })
                .collect()
        }
        DataType::Dictionary(_, _) => {
            let d = arr.as_any_dictionary();
            let values = column_values(d.values().as_ref())?;
            let keys = d.normalized_keys();
            (0..n)
                .map(|i| if arr.is_null(i) { Value::Null } else { values.get(keys[i]).cloned().unwrap_or(Value::Null) })
                .collect()
        }
        other => return Err(format!("unsupported Arrow type {other}")),
    };
    Ok(out)
}
