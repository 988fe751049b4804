"""Billing: plans and billing cycles, usage against a plan, locks and usage alerts."""
