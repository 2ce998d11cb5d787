"""ember.compiler"""
