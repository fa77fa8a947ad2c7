-- Run once by the postgres image on an empty volume: MLflow's database beside the app's.
CREATE DATABASE mlflow;
