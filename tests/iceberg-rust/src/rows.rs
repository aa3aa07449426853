//! The one table shape every case uses (the cross-client pytest builds the
//! same schema in PyIceberg): its Iceberg schema, rows as plain values, and
//! their conversion to and from Arrow record batches.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use serde::{Deserialize, Serialize};

/// One row. `day` is days since 1970-01-01, `ts` microseconds since the
/// epoch (a timestamp without zone), so rows compare exactly across clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: i64,
    pub name: Option<String>,
    pub category: String,
    pub price: Option<f64>,
    pub flag: Option<bool>,
    pub day: Option<i32>,
    pub ts: Option<i64>,
}

/// `id long required, name string, category string required, price double,
/// flag boolean, day date, ts timestamp`, field ids 1 to 7.
pub fn schema() -> Schema {
    let p = |t| Type::Primitive(t);
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", p(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", p(PrimitiveType::String)).into(),
            NestedField::required(3, "category", p(PrimitiveType::String)).into(),
            NestedField::optional(4, "price", p(PrimitiveType::Double)).into(),
            NestedField::optional(5, "flag", p(PrimitiveType::Boolean)).into(),
            NestedField::optional(6, "day", p(PrimitiveType::Date)).into(),
            NestedField::optional(7, "ts", p(PrimitiveType::Timestamp)).into(),
        ])
        .build()
        .expect("schema")
}

/// Deterministic rows for `ids`: three categories, unicode names, and a
/// null in every optional column on every fifth row.
pub fn sample(ids: std::ops::Range<i64>) -> Vec<Row> {
    ids.map(|id| {
        let null = id % 5 == 0;
        Row {
            id,
            name: (!null).then(|| format!("näme-{id}")),
            category: ["a", "b", "c"][id.rem_euclid(3) as usize].to_string(),
            price: (!null).then_some(id as f64 * 1.25),
            flag: (!null).then_some(id % 2 == 0),
            day: (!null).then_some(19_000 + id as i32),
            ts: (!null).then_some(1_700_000_000_000_000 + id * 1_000_001),
        }
    })
    .collect()
}

impl Row {
    /// `rows` as a batch of the table's Arrow schema (with the field ids
    /// the Parquet writer needs).
    pub fn to_batch(schema: &Schema, rows: &[Row]) -> RecordBatch {
        let arrow = iceberg::arrow::schema_to_arrow_schema(schema).expect("arrow schema");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.name.as_deref()))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.category.as_str()))),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.price))),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.flag))),
            Arc::new(Date32Array::from_iter(rows.iter().map(|r| r.day))),
            Arc::new(TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.ts))),
        ];
        RecordBatch::try_new(Arc::new(arrow), columns).expect("record batch")
    }

    /// The rows of a scanned batch, columns found by name.
    pub fn from_batch(batch: &RecordBatch) -> Vec<Row> {
        let ids = column::<Int64Array>(batch, "id");
        let names = column::<StringArray>(batch, "name");
        let categories = column::<StringArray>(batch, "category");
        let prices = column::<Float64Array>(batch, "price");
        let flags = column::<BooleanArray>(batch, "flag");
        let days = column::<Date32Array>(batch, "day");
        let tss = column::<TimestampMicrosecondArray>(batch, "ts");
        (0..batch.num_rows())
            .map(|i| Row {
                id: ids.value(i),
                name: names.is_valid(i).then(|| names.value(i).to_string()),
                category: categories.value(i).to_string(),
                price: prices.is_valid(i).then(|| prices.value(i)),
                flag: flags.is_valid(i).then(|| flags.value(i)),
                day: days.is_valid(i).then(|| days.value(i)),
                ts: tss.is_valid(i).then(|| tss.value(i)),
            })
            .collect()
    }
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("scan has no column {name}"));
    col.as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} is {}, not {}", col.data_type(), std::any::type_name::<T>()))
}
