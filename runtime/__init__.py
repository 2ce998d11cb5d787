"""ember.runtime"""
