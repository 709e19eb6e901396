"""The upstream side: lean HTTP/1.1 connections, pooled per target."""
