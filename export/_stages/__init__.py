"""Cutting a converted model into stages (plan), the text-encoder stage, and tracing each stage
with dynamic shapes."""
